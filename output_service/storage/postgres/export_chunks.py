"""The ndjson export on PostgreSQL: items pre-rendered in runs, behind a live cut too.

Rendering an item as JSON on the server costs ~4 us a hop (a 10-hop result:
~50 us, a ceiling near 20,000 results/s on one core); no plan made it cheaper
(`BENCHMARKS.md`, "Query API on PostgreSQL"). An item never changes once its
row is committed, so items are rendered once, newest first, in runs of
CHUNK_ITEMS joined by newlines, into `export_chunks` (compressed by the server:
JSON shrinks ~10x), and an unfiltered export streams those runs as they are.

Runs belong to segments: an interval of arrival time in one partition
(`export_segments`, with the number of rows rendered and the sum of their ids).
The maintenance pass renders a segment of each partition still taking rows
once LIVE_MIN_ROWS have arrived behind the live cut (the oldest open
transaction, as `target_partials` cuts: every row before it is committed);
when a partition closes, the rest after its last segment is rendered and the
partition is marked built (`closed`), so its runs are used without checking.
Otherwise an export checks each segment against the rows in its snapshot (one
pass over the partitions still open: count and id sum per segment) and renders
what no valid segment covers: the rows after the cut, and a segment a late row
(a transaction the cut could not see) made stale. The runs and the rows are
merged by id (`export_merge`), so the export is in the pages' order.

Filtered exports select their rows by index and are rendered as they go (their
matches are few for ip=, and node= or failed= over everything is the rare case).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from output_service.storage.postgres import closed as closed_parts
from output_service.storage.postgres import queries, schema
from output_service.storage.postgres.connection import Conn
from output_service.storage.postgres.export_merge import Block, merged
from output_service.storage.postgres.queries import Received
from output_service.storage.postgres.target_partials import CUT_SQL, LIVE_LAG
from output_service.storage.seam import ResultFilter

KIND = "export"
CHUNK_ITEMS = 5000
LIVE_MIN_ROWS = CHUNK_ITEMS  # rows behind the cut before a live segment is rendered
# rows of one live segment, one a maintenance pass (~1 s of the database's CPU): the
# rendering competes with ingest for it, so it is bounded, not kept up at any rate
LIVE_MAX_ROWS = 20_000
EVERYTHING = ResultFilter()
_RUNS = (
    "SELECT last_id, first_id, items FROM export_chunks WHERE part = ANY($1::text[])"
    " OR (part, seg_from) IN (SELECT * FROM unnest($2::text[], $3::timestamptz[]))"
    " ORDER BY last_id DESC"
)


@dataclass(frozen=True, slots=True)
class Segment:
    part: str
    start: dt.datetime
    end: dt.datetime
    rows: int
    id_sum: int


async def _render(conn: Conn, part: str, span: Received, limit_s: float) -> int:
    """Render the rows of `part` that arrived within `span` into runs, and record the
    segment; the rows rendered. Inside the caller's transaction."""
    sql, args = queries.items(EVERYTHING, None, None, received=span)
    cur = await conn.cursor(sql, *args)
    count = id_sum = 0
    while rows := await cur.fetch(CHUNK_ITEMS, timeout=limit_s):
        await conn.execute(
            "INSERT INTO export_chunks (part, last_id, first_id, seg_from, items)"
            " VALUES ($1, $2, $3, $4, $5)",
            part,
            rows[0]["id"],
            rows[-1]["id"],
            span.start,
            "\n".join(r["item"] for r in rows),
            timeout=limit_s,
        )
        count += len(rows)
        id_sum += sum(r["id"] for r in rows)
    if count:
        await conn.execute(
            "INSERT INTO export_segments (part, seg_from, seg_to, rows, id_sum)"
            " VALUES ($1, $2, $3, $4, $5)",
            part,
            span.start,
            span.end,
            count,
            id_sum,
        )
    return count


async def _segments(conn: Conn, parts: Sequence[str]) -> list[Segment]:
    rows = await conn.fetch(
        "SELECT part, seg_from, seg_to, rows, id_sum FROM export_segments"
        " WHERE part = ANY($1::text[]) ORDER BY seg_from",
        list(parts),
    )
    return [Segment(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


async def _valid(conn: Conn, segments: list[Segment], limit_s: float) -> list[Segment]:
    """The segments whose rows are still exactly the rows rendered: one pass over the
    rows they span, counted per segment (segments never overlap in arrival time)."""
    if not segments:
        return []
    bounds = sorted({s.start for s in segments} | {s.end for s in segments})
    rows = await conn.fetch(
        "SELECT width_bucket(received_at, $1::timestamptz[]) AS b, count(*), sum(id)"
        " FROM ping_results WHERE received_at >= $2 AND received_at < $3 GROUP BY b",
        bounds,
        bounds[0],
        bounds[-1],
        timeout=limit_s,
    )
    found = {r[0]: (r[1], int(r[2])) for r in rows}
    return [s for s in segments if found.get(bounds.index(s.start) + 1) == (s.rows, s.id_sum)]


async def _lock(conn: Conn, part: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        closed_parts.SUMMARY_LOCK,
        f"{part}/{KIND}",
    )


async def _forget(conn: Conn, part: str) -> None:
    await conn.execute("DELETE FROM export_chunks WHERE part = $1", part)
    await conn.execute("DELETE FROM export_segments WHERE part = $1", part)


async def build(conn: Conn, part: closed_parts.Closed, limit_s: float) -> None:
    """Complete one closed partition's runs (unless done meanwhile): the rows after its
    last segment, or all of them again when a segment is stale."""
    async with conn.transaction():
        if not await closed_parts.begin_build(conn, KIND, part):
            return
        segments = await _segments(conn, [part.name])
        valid = await _valid(conn, segments, limit_s)
        if len(valid) != len(segments):
            await _forget(conn, part.name)
            valid = []
        start = max((s.end for s in valid), default=part.part.start)
        await _render(conn, part.name, Received(start, part.part.end), limit_s)
        await closed_parts.finish_build(conn, KIND, part)


async def build_live(conn: Conn, limit_s: float, min_rows: int = LIVE_MIN_ROWS) -> list[str]:
    """Render a segment of each partition still taking rows once `min_rows` have arrived
    behind the live cut (at most LIVE_MAX_ROWS of them); the partitions rendered. One
    instance per partition at a time. A partition with a stale segment (a row
    committed behind an earlier cut) is rendered again from its start."""
    # before any snapshot that renders: every row that arrived before `cut` is in it
    cut: dt.datetime = await conn.fetchval(CUT_SQL, LIVE_LAG, timeout=limit_s)
    span = await closed_parts.span(conn)
    done: list[str] = []
    for part in await schema.partitions(conn):
        if (span.live.start is not None and part.start < span.live.start) or part.start >= cut:
            continue
        async with conn.transaction():
            await _lock(conn, part.name)
            segments = await _segments(conn, [part.name])
            if len(await _valid(conn, segments, limit_s)) != len(segments):
                await _forget(conn, part.name)  # a late row: render the partition again
                segments = []
            start = max((s.end for s in segments), default=part.start)
            todo = Received(start, min(cut, part.end))
            assert todo.start is not None and todo.end is not None
            if todo.end <= todo.start:
                continue
            behind = await conn.fetchval(
                "SELECT count(*) FROM ping_results WHERE received_at >= $1 AND received_at < $2",
                todo.start,
                todo.end,
                timeout=limit_s,
            )
            if behind < min_rows:
                continue
            if behind > LIVE_MAX_ROWS:  # end the segment at the arrival of the row past it
                end = await conn.fetchval(
                    "SELECT received_at FROM ping_results WHERE received_at >= $1"
                    " AND received_at < $2 ORDER BY received_at OFFSET $3 LIMIT 1",
                    todo.start,
                    todo.end,
                    LIVE_MAX_ROWS,
                    timeout=limit_s,
                )
                if end > todo.start:  # else one transaction holds them all: render it whole
                    todo = Received(todo.start, end)
            if await _render(conn, part.name, todo, limit_s):
                done.append(part.name)
    return done


async def everything(conn: Conn, fetch_rows: int, limit_s: float) -> AsyncIterator[list[str]]:
    """Every result as JSON text, by id, newest first. Run inside a repeatable-read
    transaction: the runs, the segments' check and the rows are one snapshot."""
    span = await closed_parts.span(conn)
    built = await closed_parts.built(conn, KIND, span.closed)
    open_parts = [p for p in await schema.partitions(conn) if p.name not in built]
    segments = await _valid(conn, await _segments(conn, [p.name for p in open_parts]), limit_s)
    runs = _runs(conn, built, segments, limit_s)
    rest = _uncovered(open_parts, segments)
    if not rest:
        streams = [runs]
    else:
        statement = queries.items(EVERYTHING, None, None, within=rest)
        streams = [runs, _blocks(rendered(conn, statement, fetch_rows, limit_s))]
    async for chunk in merged(streams):
        yield chunk


async def _runs(
    conn: Conn, built: set[str], segments: list[Segment], limit_s: float
) -> AsyncIterator[Block]:
    cur = await conn.cursor(
        _RUNS, sorted(built), [s.part for s in segments], [s.start for s in segments]
    )
    while rows := await cur.fetch(1, timeout=limit_s):
        last_id, first_id, items = rows[0]
        yield Block([items], last_id, first_id, packed=True)


def _uncovered(parts: list[schema.Partition], segments: list[Segment]) -> list[Received]:
    """The arrival intervals of `parts` that no segment covers, adjacent ones joined."""
    covered: dict[str, list[Segment]] = {}
    for s in segments:
        covered.setdefault(s.part, []).append(s)
    out: list[Received] = []

    def add(start: dt.datetime, end: dt.datetime) -> None:
        if end <= start:
            return
        if out and out[-1].end == start:
            out[-1] = Received(out[-1].start, end)
        else:
            out.append(Received(start, end))

    for p in parts:
        at = p.start
        for s in sorted(covered.get(p.name, []), key=lambda s: s.start):
            add(at, s.start)
            at = s.end
        add(at, p.end)
    return out


async def _blocks(chunks: AsyncIterator[list[tuple[int, str]]]) -> AsyncIterator[Block]:
    async for rows in chunks:
        ids = [r[0] for r in rows]
        yield Block([r[1] for r in rows], ids[0], ids[-1], ids)


async def rendered(
    conn: Conn, statement: tuple[str, list[object]], fetch_rows: int, limit_s: float
) -> AsyncIterator[list[tuple[int, str]]]:
    """(id, item) of a statement's rows, newest first, `fetch_rows` at a time."""
    sql, args = statement
    cur = await conn.cursor(sql, *args)
    while rows := await cur.fetch(fetch_rows, timeout=limit_s):
        yield [(r["id"], r["item"]) for r in rows]
        if len(rows) < fetch_rows:
            return
