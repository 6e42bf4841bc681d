"""The query benchmark's data set loaded into PostgreSQL, spread over 7 days of partitions.

`output-service ship` stamps every row with the time it arrived (as live ingest
does), so shipping `make bench-data` puts all 700,000 results into one
partition and partition pruning never shows. This loader copies the same rows
(`bench.query_data`'s files) with binary COPY and stamps each result with its
batch's arrival time, shifted so that the newest batch arrived a minute ago:
a week of live traffic, six partitions closed and the current one filling, as
a service running for a week would have. Measurement timestamps stay as
generated (January 2026), so the benchmark's queries are unchanged.

    python -m bench.pg_query_data --dir bench-data --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from output_service.storage.postgres import schema
from output_service.storage.postgres.writer import HOP_COLUMNS, PING_COLUMNS, TRACE_COLUMNS

CHUNK = 20_000  # results per COPY round
HOP_COLUMNS_WITH_ID = ("id", *HOP_COLUMNS)


def _moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00")


def _newest_arrival(files: list[Path]) -> dt.datetime:
    with sqlite3.connect(files[-1]) as db:
        return _moment(db.execute("SELECT max(received_at) FROM batches").fetchone()[0])


def _chunks(db: sqlite3.Connection, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    cur = db.execute(sql)
    while rows := cur.fetchmany(CHUNK):
        yield rows


async def load(url: str, files: list[Path], days: float) -> int:
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
        shift = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1) - _newest_arrival(files)
        with sqlite3.connect(files[0]) as db:
            first = _moment(db.execute("SELECT min(received_at) FROM batches").fetchone()[0])
        span = (dt.datetime.now(dt.UTC) - (first + shift)).days + 1
        await schema.ensure_partitions(conn, first + shift, days, int(span / days) + 2)
        id_base = batch_base = hop_base = 0
        for path in files:
            db = sqlite3.connect(path)
            arrival = {
                bid: _moment(at) + shift
                for bid, at in db.execute("SELECT id, received_at FROM batches")
            }
            await conn.copy_records_to_table(
                "batches",
                records=[
                    (batch_base + bid, arrival[bid], remote, node, count, 0)
                    for bid, remote, node, count in db.execute(
                        "SELECT id, remote, node_id, result_count FROM batches"
                    )
                ],
                columns=["id", "received_at", "remote", "node_id", "result_count", "failed_count"],
            )
            stamp: dict[int, dt.datetime] = {}
            for rows in _chunks(
                db,
                "SELECT id, ip, sent, received, packet_loss, avg_rtt, timestamp, error,"
                " batch_id, raw FROM ping_results ORDER BY id",
            ):
                records = []
                for pid, ip, sent, rec, loss, rtt, ts, err, bid, raw in rows:
                    stamp[pid] = arrival[bid]
                    records.append((id_base + pid, arrival[bid], ip, sent, rec, loss, rtt, ts,
                                    err, batch_base + bid, raw))  # fmt: skip
                await conn.copy_records_to_table(
                    "ping_results", records=records, columns=list(PING_COLUMNS)
                )
            for rows in _chunks(db, "SELECT id, ping_result_id, method, completed, error"
                                " FROM traceroute_results ORDER BY id"):  # fmt: skip
                await conn.copy_records_to_table(
                    "traceroute_results",
                    records=[
                        (id_base + tid, stamp[pid], id_base + pid, m, bool(c), e)
                        for tid, pid, m, c, e in rows
                    ],
                    columns=list(TRACE_COLUMNS),
                )
            for rows in _chunks(db, "SELECT id, traceroute_id, ttl, ip, rtt, timeout"
                                " FROM traceroute_hops ORDER BY id"):  # fmt: skip
                await conn.copy_records_to_table(
                    "traceroute_hops",
                    records=[
                        (hop_base + hid, stamp[tid], id_base + tid, ttl, ip, rtt, bool(out))
                        for hid, tid, ttl, ip, rtt, out in rows
                    ],
                    columns=list(HOP_COLUMNS_WITH_ID),
                )
            id_base += max(stamp)
            batch_base += max(arrival)
            hop_base = await conn.fetchval("SELECT max(id) FROM traceroute_hops")
            db.close()
            print(f"{path.name}: loaded ({id_base} results so far)", flush=True)
        for seq, top in (("ping_results_id_seq", id_base), ("batches_id_seq", batch_base),
                         ("traceroute_hops_id_seq", hop_base)):  # fmt: skip
            await conn.execute("SELECT setval($1, $2)", seq, top)
        await conn.execute("ANALYZE")
        return id_base
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--partition-days", type=float, default=1.0)
    args = parser.parse_args()
    files = sorted(args.dir.glob("results_*.db"))
    t0 = time.perf_counter()
    count = asyncio.run(load(args.database_url, files, args.partition_days))
    print(f"{count} results in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
