"""The ndjson export on PostgreSQL: closed partitions' items pre-rendered, the live
partition's rendered per export.

Rendering an item as JSON on the server costs ~4 us a hop (a 10-hop result:
~50 us, a ceiling near 20,000 results/s on one core); no plan made it cheaper
(`BENCHMARKS.md`, "Query API on PostgreSQL"). A closed partition's items never
change, so they are rendered once, newest first, in runs of CHUNK_ITEMS joined by
newlines, into `export_chunks` (compressed by the server: JSON shrinks ~10x).
An unfiltered export then streams those runs as they are and renders only the
rows still arriving. Filtered exports select their rows by index and are
rendered as they go (their matches are few for ip=, and node= or failed= over
everything is the rare case).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from output_service.storage.postgres import closed as closed_parts
from output_service.storage.postgres import queries
from output_service.storage.postgres.connection import Conn
from output_service.storage.seam import ResultFilter

KIND = "export"
CHUNK_ITEMS = 5000
EVERYTHING = ResultFilter()


async def build(conn: Conn, part: closed_parts.Closed, limit_s: float) -> None:
    """Render one closed partition's items into export_chunks (unless done meanwhile)."""
    async with conn.transaction():
        if not await closed_parts.begin_build(conn, KIND, part):
            return
        await conn.execute("DELETE FROM export_chunks WHERE part = $1", part.name)
        sql, args = queries.items(EVERYTHING, None, None, received=part.received, upto_id=part.top)
        cur = await conn.cursor(sql, *args)
        while rows := await cur.fetch(CHUNK_ITEMS, timeout=limit_s):
            await conn.execute(
                "INSERT INTO export_chunks (part, last_id, items) VALUES ($1, $2, $3)",
                part.name,
                rows[0]["id"],
                "\n".join(r["item"] for r in rows),
                timeout=limit_s,
            )
        await closed_parts.finish_build(conn, KIND, part)


async def everything(conn: Conn, fetch_rows: int, limit_s: float) -> AsyncIterator[list[str]]:
    """Every result as JSON text, newest partition first, newest first within each.
    Run inside a repeatable-read transaction: the runs and the live rows are one
    snapshot. A partition without an up-to-date rendering is rendered here."""
    span = await closed_parts.span(conn)
    done = await closed_parts.built(conn, KIND, span.closed)
    async for chunk in rendered(conn, queries.items(EVERYTHING, None, None, received=span.live),
                                 fetch_rows, limit_s):  # fmt: skip
        yield chunk
    for part in span.closed:
        if part.name in done:
            cur = await conn.cursor(
                "SELECT items FROM export_chunks WHERE part = $1 ORDER BY last_id DESC", part.name
            )
            while rows := await cur.fetch(1, timeout=limit_s):
                yield rows[0]["items"].split("\n")
        else:
            statement = queries.items(EVERYTHING, None, None, received=part.received)
            async for chunk in rendered(conn, statement, fetch_rows, limit_s):
                yield chunk


async def rendered(
    conn: Conn, statement: tuple[str, list[object]], fetch_rows: int, limit_s: float
) -> AsyncIterator[list[str]]:
    sql, args = statement
    cur = await conn.cursor(sql, *args)
    while rows := await cur.fetch(fetch_rows, timeout=limit_s):
        yield [r["item"] for r in rows]
        if len(rows) < fetch_rows:
            return
