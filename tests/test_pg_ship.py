"""`output-service ship`: results files into PostgreSQL, idempotent."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

from output_service.storage.sqlite.schema import SEED_TABLES
from tests.conftest import StartService
from tests.pg_load import results
from tests.pg_server import PgDatabase


def run_ship(url: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "output_service", "ship", *map(str, paths)],
        env={**os.environ, "OUTPUT_SERVICE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def go_era_file(path: Path, rows: int) -> Path:
    """A file as the Go service wrote it: the seed tables only, its time format."""
    conn = sqlite3.connect(path)
    conn.executescript(SEED_TABLES)
    for i in range(rows):
        conn.execute(
            "INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp, error)"
            " VALUES (?, 3, 3, 0.0, 5000, '2025-06-01 10:00:00.5+02:00', NULL)",
            (f"192.0.2.{i + 1}",),
        )
        conn.execute(
            "INSERT INTO traceroute_results (ping_result_id, method, completed)"
            " VALUES (?, 'udp', 1)",
            (i + 1,),
        )
        conn.execute(
            "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt, timeout)"
            " VALUES (?, 1, '198.51.100.7', 300, 0)",
            (i + 1,),
        )
    conn.commit()
    conn.close()
    return path


async def test_ship_twice_adds_nothing_and_a_live_batch_is_not_added_again(
    start_service: StartService, pg_db: PgDatabase, tmp_path: Path
) -> None:
    edge = await start_service()  # SQLite, the default
    central = await start_service(storage="postgres", database_url=pg_db.url)
    for key, n in (("k1", 3), ("k2", 2)):
        reply = await edge.results.post(
            "/results", json=results(n), headers={"Idempotency-Key": key}
        )
        assert reply.status == 200
    assert (await edge.results.post("/results", json=results(4, base=50))).status == 200
    # k1 also went to the central store live
    live = await central.results.post(
        "/results", json=results(3), headers={"Idempotency-Key": "k1"}
    )
    assert live.status == 200
    edge_dir = edge.services.config.db_dir
    go_dir = tmp_path / "go"
    go_dir.mkdir()
    go_file = go_era_file(go_dir / "results_2025-06-01_10-00-00.db", 7)

    first = run_ship(pg_db.url, edge_dir, go_file)
    assert first.returncode == 0, first.stderr
    assert "6 results added, 1 already stored" in first.stdout  # k2 and the keyless batch
    assert "7 results added, 0 already stored" in first.stdout
    assert pg_db.psql("SELECT count(*) FROM ping_results") == str(3 + 2 + 4 + 7)
    second = run_ship(pg_db.url, edge_dir, go_file)
    assert second.returncode == 0, second.stderr
    assert "0 results added, 3 already stored" in second.stdout
    assert "0 results added, 1 already stored" in second.stdout
    assert pg_db.psql("SELECT count(*) FROM ping_results") == "16"
    # the Go file's local time became UTC; its hops came along
    assert (
        pg_db.psql("SELECT DISTINCT timestamp FROM ping_results WHERE ip LIKE '192.0.2.%'")
        == "2025-06-01T08:00:00.500000000Z"
    )
    assert pg_db.psql("SELECT count(*) FROM traceroute_hops WHERE ip = '198.51.100.7'") == "7"


def test_ship_without_a_database_url_or_file_is_exit_2(tmp_path: Path) -> None:
    done = run_ship("", tmp_path / "missing.db")
    assert done.returncode == 2
    assert "--database-url must be a postgresql:// URL" in done.stderr
