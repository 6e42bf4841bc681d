"""Results files: the Go schema is kept, older files are migrated forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from output_service.storage.sqlite.schema import (
    SCHEMA_VERSION,
    SEED_INDEXES,
    SEED_TABLES,
    SchemaError,
    add_sealed_indexes,
    index_names,
    migrate,
)
from tests.conftest import StartService, make_result, query

INDEXES = "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'idx_%'"


def seed_file(path: Path) -> None:
    """A file as the Go service left it: seed tables, rows, no user_version."""
    conn = sqlite3.connect(path)
    conn.executescript(SEED_TABLES + SEED_INDEXES)
    conn.execute(
        "INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp)"
        " VALUES ('198.51.100.1', 4, 4, 0, 1000, '2025-01-01T00:00:00Z')"
    )
    conn.execute(
        "INSERT INTO traceroute_results (ping_result_id, method, completed) VALUES (1, 'icmp', 1)"
    )
    conn.execute(
        "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt, timeout)"
        " VALUES (1, 1, '10.0.0.1', 5, 0)"
    )
    conn.commit()
    conn.close()


async def test_go_file_is_migrated_and_continued(
    start_service: StartService, tmp_path: Path
) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    old = db_dir / "results_2025-01-01_00-00-00.db"
    seed_file(old)
    service = await start_service(rotation_days=10_000)  # the file's name says 2025
    assert service.db_file == old
    resp = await service.results.post("/results", json=[make_result(hops=1)])
    assert resp.status == 200
    assert query(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(old, "SELECT id, ip, batch_id FROM ping_results ORDER BY id") == [
        (1, "198.51.100.1", None),
        (2, "192.0.2.1", 1),
    ]
    assert query(old, "SELECT id, ping_result_id FROM traceroute_results ORDER BY id") == [
        (1, 1),
        (2, 2),
    ]
    stats = await (await service.health.get("/stats")).json()
    assert stats["total_results"] == 2
    # continued as the live file: the Go file's hop-IP index is dropped
    assert "idx_traceroute_hops_ip" not in {r[0] for r in query(old, INDEXES)}


def test_seed_tables_columns_and_indexes_are_all_there(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "f.db")
    migrate(conn)
    columns = {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
        for t in ("ping_results", "traceroute_results", "traceroute_hops", "batches")
    }
    assert columns["ping_results"] == [
        "id",
        "ip",
        "sent",
        "received",
        "packet_loss",
        "avg_rtt",
        "timestamp",
        "error",
        "created_at",
        "batch_id",
        "raw",
    ]
    assert columns["traceroute_results"] == ["id", "ping_result_id", "method", "completed", "error"]
    assert columns["traceroute_hops"] == ["id", "traceroute_id", "ttl", "ip", "rtt", "timeout"]
    live = {
        "idx_ping_results_ip",
        "idx_ping_results_timestamp",
        "idx_traceroute_results_ping_result_id",
        "idx_traceroute_hops_traceroute_id",
    }
    # a new file is the live one: every seed index but the one on hop IPs
    assert {r[0] for r in conn.execute(INDEXES)} == live
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    # sealing adds it: a sealed file has all five seed indexes
    assert add_sealed_indexes(conn) is True
    assert {r[0] for r in conn.execute(INDEXES)} == live | {"idx_traceroute_hops_ip"}
    assert index_names(conn) == live | {"idx_traceroute_hops_ip"}
    assert add_sealed_indexes(conn) is False  # idempotent
    conn.close()


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "f.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError):
        migrate(conn)
    conn.close()


async def test_created_at_is_the_arrival_time_in_new_and_migrated_files(
    start_service: StartService, tmp_path: Path
) -> None:
    """The Go schema's `ping_results.created_at`: set on every new row, and filled
    in from the batch's arrival for rows of a version-1 file."""
    running = await start_service()
    resp = await running.results.post("/results", json=[make_result()])
    assert resp.status == 200
    ((created, received),) = running.rows(
        "SELECT p.created_at, b.received_at FROM ping_results p JOIN batches b ON b.id = p.batch_id"
    )
    assert created == received and created.endswith("Z")

    old = tmp_path / "v1.db"  # a file as version 1 left it: no created_at column
    conn = sqlite3.connect(old)
    conn.executescript(SEED_TABLES.replace(",\n    created_at DATETIME", ""))
    conn.executescript(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, received_at TEXT NOT NULL,"
        " remote TEXT, node_id TEXT, idempotency_key TEXT UNIQUE, body_hash TEXT,"
        " result_count INTEGER NOT NULL);"
        "ALTER TABLE ping_results ADD COLUMN batch_id INTEGER;"
        "ALTER TABLE ping_results ADD COLUMN raw TEXT;"
        "INSERT INTO batches VALUES (1, '2026-01-02T00:00:00.000000Z', NULL, NULL, NULL, NULL, 1);"
        "INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp, batch_id)"
        " VALUES ('192.0.2.1', 1, 1, 0, 1, '2026-01-01T23:59:59Z', 1);"
        "PRAGMA user_version = 1;"
    )
    assert migrate(conn) == 1
    conn.close()
    assert query(old, "SELECT created_at FROM ping_results") == [("2026-01-02T00:00:00.000000Z",)]
