"""The SQLite ceiling: the service's rows inserted straight into its schema.

Stdlib sqlite3, the DDL of `output_service.storage.sqlite.schema` (seed tables and
indexes plus the `batches` table), the service's default PRAGMAs, ids assigned
from counters, one `executemany` per table and 1,000 results per transaction.
Rows are built before the clock starts: this is what SQLite alone can take.

    python -m bench.ceiling --results 60000 --hops 10 [--no-hop-index]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.payload import POOL_SEED, TIMESTAMP, make_results
from output_service.config import Config
from output_service.storage.sqlite.schema import HOP_IP_INDEX, migrate

PER_TXN = 1000
BATCH = 100  # one `batches` row per 100 results, as the service writes for 100-result POSTs


def build_rows(results: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """The four tables' rows for `results`, ids from 1."""
    batches: list[Any] = []
    pings: list[Any] = []
    traces: list[Any] = []
    hops: list[Any] = []
    trace_id = 0
    for i, r in enumerate(results):
        ping_id = i + 1
        batch_id = i // BATCH + 1
        if i % BATCH == 0:
            batches.append((batch_id, TIMESTAMP, "127.0.0.1", None, None, None, BATCH))
        pings.append(
            (
                ping_id,
                r["ip"],
                r["sent"],
                r["received"],
                r["packet_loss"],
                r["avg_rtt"],
                r["timestamp"],
                None,
                batch_id,
                None,
                TIMESTAMP,  # created_at: the arrival time, as the service stores it
            )
        )
        t = r.get("traceroute")
        if t:
            trace_id += 1
            traces.append((trace_id, ping_id, t["method"], t["completed"], None))
            hops.extend((trace_id, h["ttl"], h["ip"], h["rtt"], False) for h in t["hops"])
    return batches, pings, traces, hops


def open_db(
    path: Path, *, hop_ip_index: bool = True, page_size: int = 0, pragmas: Sequence[str] = ()
) -> sqlite3.Connection:
    """A fresh file with the seed schema (all five indexes; `hop_ip_index=False` leaves
    out the one the service builds at seal) and the service's default PRAGMAs."""
    defaults = Config()
    conn = sqlite3.connect(path, isolation_level=None)
    if page_size:
        conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={defaults.synchronous}")
    conn.execute(f"PRAGMA cache_size=-{defaults.cache_size_mb * 1024}")
    conn.execute(f"PRAGMA wal_autocheckpoint={defaults.wal_autocheckpoint}")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    migrate(conn)  # a new file: the live schema, without the hop-IP index
    if hop_ip_index:  # the seed schema, as the Go service wrote every file
        conn.execute(HOP_IP_INDEX)
    return conn


def measure(
    db_dir: Path,
    total: int,
    hops: int,
    *,
    hop_ip_index: bool = True,
    keep: bool = False,
    per_txn: int = PER_TXN,
    page_size: int = 0,
    pragmas: Sequence[str] = (),
) -> dict[str, Any]:
    """Insert `total` results, `per_txn` per transaction; results/s over the whole run
    and the time after each transaction (`curve`). `keep` leaves the file at `path`."""
    results = make_results(total, hops, POOL_SEED)  # the load generator's results
    batches, pings, traces, hop_rows = build_rows(results)
    path = db_dir / f"ceiling-{hops}-{int(hop_ip_index)}.db"
    conn = open_db(path, hop_ip_index=hop_ip_index, page_size=page_size, pragmas=pragmas)
    per_result_hops = hops
    curve: list[tuple[int, float]] = []
    started = time.perf_counter()
    for lo in range(0, total, per_txn):
        hi = min(lo + per_txn, total)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO batches (id, received_at, remote, node_id, idempotency_key, body_hash,"
            " result_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batches[lo // BATCH : (hi + BATCH - 1) // BATCH],
        )
        conn.executemany(
            "INSERT INTO ping_results (id, ip, sent, received, packet_loss, avg_rtt, timestamp,"
            " error, batch_id, raw, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            pings[lo:hi],
        )
        if traces:
            conn.executemany(
                "INSERT INTO traceroute_results (id, ping_result_id, method, completed, error)"
                " VALUES (?, ?, ?, ?, ?)",
                traces[lo:hi],
            )
            conn.executemany(
                "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt, timeout)"
                " VALUES (?, ?, ?, ?, ?)",
                hop_rows[lo * per_result_hops : hi * per_result_hops],
            )
        conn.execute("COMMIT")
        curve.append((hi, time.perf_counter() - started))
    seconds = time.perf_counter() - started
    conn.close()
    size = sum(p.stat().st_size for p in db_dir.glob(path.name + "*"))
    for p in db_dir.glob(path.name + "*"):
        if not keep:
            p.unlink()
    return {
        "results_per_s": total / seconds,
        "seconds": seconds,
        "results": total,
        "hops": hops,
        "hop_ip_index": hop_ip_index,
        "bytes": size,
        "curve": curve,
        "path": str(path),
    }


def rate_at(ceiling: dict[str, Any], volume: int) -> float:
    """The ceiling's results/s for inserting the first `volume` results into an empty
    file (a file slows down as it grows, so a run that wrote V results is compared
    with the time SQLite alone took for the same V). Past the end: the last figure."""
    for count, seconds in ceiling["curve"]:
        if count >= volume:
            return float(count / seconds)
    return float(ceiling["results_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=60000)
    parser.add_argument("--hops", type=int, default=10)
    parser.add_argument("--no-hop-index", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        out = measure(Path(tmp), args.results, args.hops, hop_ip_index=not args.no_hop_index)
        del out["curve"]
        print(json.dumps(out))


if __name__ == "__main__":
    main()
