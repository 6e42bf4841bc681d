"""The benchmark compares the service with SQLite alone on "the same rows": check
that the ceiling inserts exactly what the service stores for the same bodies."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bench.ceiling import build_rows, open_db
from bench.payload import POOL_SEED, make_results
from tests.conftest import StartService

COLUMNS = {
    "ping_results": "id, ip, sent, received, packet_loss, avg_rtt, timestamp, error",
    "traceroute_results": "id, ping_result_id, method, completed, error",
    "traceroute_hops": "traceroute_id, ttl, ip, rtt, timeout",
}


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT {cols} FROM {table} ORDER BY rowid").fetchall()
            for table, cols in COLUMNS.items()
        }
    finally:
        conn.close()


async def test_ceiling_rows_equal_what_the_service_stores(
    start_service: StartService, tmp_path: Path
) -> None:
    results = make_results(200, 10, POOL_SEED)
    running = await start_service()
    for lo in (0, 100):
        resp = await running.results.post("/results", json=results[lo : lo + 100])
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "received": 100}

    path = tmp_path / "ceiling.db"
    conn = open_db(path)
    batches, pings, traces, hops = build_rows(results)
    conn.executemany(
        "INSERT INTO ping_results (id, ip, sent, received, packet_loss, avg_rtt, timestamp,"
        " error, batch_id, raw, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        pings,
    )
    conn.executemany("INSERT INTO traceroute_results VALUES (?, ?, ?, ?, ?)", traces)
    conn.executemany(
        "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt, timeout) VALUES (?, ?, ?, ?, ?)",
        hops,
    )
    conn.close()

    service = _rows(running.db_file)
    ceiling = _rows(path)
    assert len(service["traceroute_hops"]) == 2000
    assert service == ceiling
    assert len(batches) == 2


def test_pool_bodies_are_distinct_results() -> None:
    results = make_results(500, 10, POOL_SEED)
    assert len({json.dumps(r, sort_keys=True) for r in results}) == 500
    assert all(r["traceroute"]["hops"][-1]["ip"] == r["ip"] for r in results)
