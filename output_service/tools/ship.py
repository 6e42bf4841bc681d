"""`output-service ship --database-url URL FILE|DIR`: load results files into PostgreSQL.

Sealed files, /dump backups and Go-era files from the SQLite instances at the
edge go into the central database through the same writer as live ingest, so
a shipped batch lands exactly like a posted one. Idempotent: every batch is
shipped under a key. A batch that came with an Idempotency-Key keeps it, so a
batch already sent live to the central store is not added again; any other
batch (or, in a Go-era file without a `batches` table, each run of
`CHUNK_ROWS` results) is keyed by a hash of its rows, so shipping a file twice
adds nothing. Shipped rows arrive now: retention counts from the shipping.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from output_service.models import Batch, Hop, Result, Traceroute, normalize_timestamp
from output_service.storage.sqlite import connect

if TYPE_CHECKING:
    from output_service.storage.postgres.writer import Outcome

CHUNK_ROWS = 500
IN_FLIGHT = 64
ENV_URL = "OUTPUT_SERVICE_DATABASE_URL"


@dataclass
class Shipped:
    batches: int = 0
    added: int = 0  # results
    already: int = 0  # batches found in the database


def _open(path: Path) -> sqlite3.Connection:
    return connect.read_only(path)


def _timestamp(text: str) -> str:
    try:
        return normalize_timestamp(str(text).replace(" ", "T", 1))
    except ValueError:
        return str(text)  # a Go-era value we cannot read: kept as it was


def _results(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> Batch:
    has_raw = "raw" in {r[1] for r in conn.execute("PRAGMA table_info(ping_results)")}
    rows = conn.execute(
        "SELECT id, ip, sent, received, packet_loss, avg_rtt, timestamp, error"
        f"{', raw' if has_raw else ''} FROM ping_results WHERE {where} ORDER BY id",
        params,
    ).fetchall()
    results: list[Result] = []
    raw: dict[int, bytes] = {}
    for index, row in enumerate(rows):
        trace = conn.execute(
            "SELECT id, method, completed, error FROM traceroute_results"
            " WHERE ping_result_id = ? ORDER BY id LIMIT 1",
            (row[0],),
        ).fetchone()
        traceroute = None
        if trace is not None:
            hops = [
                Hop(ttl=h[0], ip=h[1] or "", rtt=h[2] or 0, timeout=bool(h[3]))
                for h in conn.execute(
                    "SELECT ttl, ip, rtt, timeout FROM traceroute_hops"
                    " WHERE traceroute_id = ? ORDER BY ttl, id",
                    (trace[0],),
                )
            ]
            traceroute = Traceroute(trace[1] or "", bool(trace[2]), trace[3] or "", hops)
        results.append(
            Result(row[1], row[2], row[3], float(row[4]), row[5], _timestamp(row[6]),
                   row[7] or "", traceroute)
        )  # fmt: skip
        if has_raw and row[8]:
            raw[index] = str(row[8]).encode()
    return Batch(results, raw)


def _row_key(batch: Batch) -> str:
    digest = hashlib.sha256()
    for r in batch.results:
        digest.update(repr((r.ip, r.sent, r.received, r.packet_loss, r.avg_rtt, r.timestamp,
                            r.error, r.traceroute)).encode())  # fmt: skip
    return f"ship:{digest.hexdigest()}"


def batches_of(path: Path) -> Iterator[tuple[Batch, str, str | None, str | None]]:
    """(batch, key, remote, node_id) for every batch of a results file."""
    conn = _open(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "batches" in tables:
            meta = conn.execute(
                "SELECT id, idempotency_key, remote, node_id FROM batches ORDER BY id"
            ).fetchall()
            for batch_id, key, remote, node in meta:
                batch = _results(conn, "batch_id = ?", (batch_id,))
                if batch.results:
                    yield batch, key or _row_key(batch), remote, node
            loose = "batch_id IS NULL"
        else:
            loose = "1 = 1"  # a Go-era file: no batches
        ids = [r[0] for r in conn.execute(f"SELECT id FROM ping_results WHERE {loose} ORDER BY id")]
        for start in range(0, len(ids), CHUNK_ROWS):
            chunk = ids[start : start + CHUNK_ROWS]
            batch = _results(conn, f"{loose} AND id BETWEEN ? AND ?", (chunk[0], chunk[-1]))
            yield batch, _row_key(batch), None, None
    finally:
        conn.close()


def files_of(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.glob("*.db") if p.name != "state.db")
    return [target]


async def ship(url: str, paths: Sequence[Path], progress: bool) -> dict[Path, Shipped]:
    # imported here: asyncpg is optional (the `postgres` extra)
    from output_service.storage.postgres import schema
    from output_service.storage.postgres.connection import create_pool
    from output_service.storage.postgres.writer import PgWriter, WriterSettings
    from output_service.storage.seam import Submission

    pool = await create_pool(url, 2, 300.0)
    done: dict[Path, Shipped] = {}
    try:
        async with pool.acquire() as conn:
            await schema.migrate(conn)
            now = dt.datetime.now(dt.UTC)
            await schema.ensure_partitions(conn, now, 1.0, 1)

        async def partitions() -> None:
            async with pool.acquire() as conn:
                await schema.ensure_partitions(conn, dt.datetime.now(dt.UTC), 1.0, 1)

        writer = PgWriter(
            pool,
            WriterSettings(max_group_results=2000, queue_max_results=50_000, hops=False),
            on_commit=lambda *_: None,
            on_lost=lambda exc: None,
            ensure_partitions=partitions,
        )
        writer.start()
        try:
            for path in paths:
                shipped = done[path] = Shipped()
                window: list[asyncio.Future[Outcome]] = []
                for batch, key, remote, node in batches_of(path):
                    # several batches in flight: the writer commits them as one group
                    window.append(writer.submit(Submission(batch, remote, node, key)))
                    if len(window) >= IN_FLIGHT:
                        _count(shipped, await asyncio.gather(*window), progress, path)
                        window = []
                _count(shipped, await asyncio.gather(*window), progress, path)
                if progress:
                    print(file=sys.stderr)
        finally:
            await writer.close()
    finally:
        await pool.close()
    return done


def _count(shipped: Shipped, outcomes: list[Outcome], progress: bool, path: Path) -> None:
    for outcome in outcomes:
        shipped.batches += 1
        if outcome.duplicate:
            shipped.already += 1
        else:
            shipped.added += outcome.count
    if progress:
        print(f"\r{path.name}: {shipped.batches} batches", end="", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="output-service ship", description="Load results files into PostgreSQL."
    )
    parser.add_argument("--database-url", default=os.environ.get(ENV_URL, ""),
                        help=f"postgresql:// URL (env {ENV_URL})")  # fmt: skip
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    args = parser.parse_args(list(argv))
    if not args.database_url.startswith(("postgresql://", "postgres://")):
        print("output-service ship: --database-url must be a postgresql:// URL", file=sys.stderr)
        return 2
    paths = [p for target in args.paths for p in files_of(target)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"output-service ship: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    from output_service.storage.postgres.connection import describe

    try:
        done = asyncio.run(ship(args.database_url, paths, sys.stderr.isatty()))
    except sqlite3.DatabaseError as exc:
        print(f"output-service ship: not a results file: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database: one line, never the password
        print(f"output-service ship: {describe(exc, args.database_url)}", file=sys.stderr)
        return 2
    for path, s in done.items():
        print(f"{path}: {s.batches} batches, {s.added} results added, {s.already} already stored")
    return 0
