"""The live file goes without the hop-IP index; every sealed file and every
backup has all five seed indexes. Each file is read with its own sqlite3
connection, the way a dashboard would."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from output_service.config import Config
from output_service.storage.sqlite.file_names import results_files
from output_service.storage.sqlite.schema import SCHEMA_VERSION
from tests.conftest import Running, StartService, query
from tests.rotation_support import (
    DAY,
    FakeClock,
    batch,
    ips_in,
    journal_mode,
    names,
    post,
    rotate,
)
from tests.test_schema import seed_file

HOP_INDEX = "idx_traceroute_hops_ip"
SEED_INDEXES = {
    "idx_ping_results_ip",
    "idx_ping_results_timestamp",
    "idx_traceroute_results_ping_result_id",
    "idx_traceroute_hops_traceroute_id",
    HOP_INDEX,
}
LIVE_INDEXES = SEED_INDEXES - {HOP_INDEX}
# make_result's hops are 10.0.0.1, 10.1.0.1, ...: the same for every result.
HOP_QUERY = "SELECT count(*) FROM traceroute_hops WHERE ip = ?"


def indexes(path: Path) -> set[str]:
    rows = query(path, "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'")
    return {row[0] for row in rows}


def hop_plan(path: Path) -> str:
    """How SQLite answers a hop-IP query on this file."""
    rows = query(path, f"EXPLAIN QUERY PLAN {HOP_QUERY}", ("10.1.0.1",))
    return " ".join(str(row[-1]) for row in rows)


async def stop(running: Running) -> None:
    await running.results.close()
    await running.health.close()


async def test_live_file_answers_hop_queries_by_scan(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock())
    await post(running, batch(1, 3, hops=4))
    assert indexes(running.db_file) == LIVE_INDEXES
    assert "SCAN traceroute_hops" in hop_plan(running.db_file)
    assert query(running.db_file, HOP_QUERY, ("10.1.0.1",)) == [(3,)]


async def test_rotate_seals_the_old_file_with_every_seed_index(
    start_service: StartService,
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    first = running.db_file
    await post(running, batch(1, 3, hops=4))
    clock.advance(60)

    second = running.services.config.db_dir / await rotate(running)

    assert indexes(first) == SEED_INDEXES
    assert HOP_INDEX in hop_plan(first)
    assert query(first, HOP_QUERY, ("10.1.0.1",)) == [(3,)]
    assert query(first, "PRAGMA integrity_check") == [("ok",)]
    assert journal_mode(first) == "delete"
    assert indexes(second) == LIVE_INDEXES
    await post(running, batch(2, 2, hops=4))
    assert indexes(second) == LIVE_INDEXES


async def test_size_rotation_seals_every_old_file_and_shutdown_keeps_the_live_one(
    start_service: StartService,
) -> None:
    running = await start_service(max_size_mb=0.2, keep_files=100)
    db_dir = running.services.config.db_dir
    for tag in range(30):
        await post(running, batch(tag, 20, hops=5))
    current = running.db_file
    await stop(running)  # waits for the seals still running

    *sealed, last = results_files(db_dir)
    assert len(sealed) >= 2
    assert last == current
    assert indexes(current) == LIVE_INDEXES
    for path in sealed:
        assert indexes(path) == SEED_INDEXES, path.name
        assert query(path, "PRAGMA integrity_check") == [("ok",)]
    stored = sorted(ip for path in (*sealed, last) for ip in ips_in(path))
    assert stored == sorted(r["ip"] for tag in range(30) for r in batch(tag, 20))


async def test_restart_continues_the_live_file_without_the_index(
    start_service: StartService,
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    await post(running, batch(1, 2, hops=3))
    current = running.db_file
    await stop(running)
    assert indexes(current) == LIVE_INDEXES

    again = await start_service(clock=clock)
    assert again.db_file == current
    assert indexes(current) == LIVE_INDEXES
    await post(again, batch(2, 2, hops=3))
    # every result's second hop is 10.1.0.1: two from each run
    assert query(current, HOP_QUERY, ("10.1.0.1",)) == [(4,)]
    assert indexes(current) == LIVE_INDEXES


async def test_a_file_left_unsealed_by_a_crash_is_sealed_at_start_up(
    start_service: StartService,
) -> None:
    """A crash between a rotation and the end of its seal leaves a non-current
    file without the hop-IP index, still in WAL mode: start-up finishes it."""
    clock = FakeClock()
    running = await start_service(clock=clock)
    first = running.db_file
    await post(running, batch(1, 4, hops=3))
    clock.advance(60)
    second = await rotate(running)
    await post(running, batch(2, 1, hops=3))
    await stop(running)
    conn = sqlite3.connect(first, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"DROP INDEX {HOP_INDEX}")
    conn.close()
    assert indexes(first) == LIVE_INDEXES

    with capture_logs() as logs:
        again = await start_service(clock=clock)
    assert again.db_file.name == second
    assert indexes(first) == SEED_INDEXES
    assert HOP_INDEX in hop_plan(first)
    assert journal_mode(first) == "delete"
    assert ips_in(first) == [f"10.0.1.{i}" for i in range(4)]
    assert indexes(again.db_file) == LIVE_INDEXES
    assert [e["file"] for e in logs if e["event"] == "sealed at start-up"] == [first.name]


async def test_a_file_rotated_at_start_up_is_sealed(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, rotation_days=1)
    old = running.db_file
    await post(running, batch(1, 2, hops=3))
    await stop(running)
    assert indexes(old) == LIVE_INDEXES

    clock.advance(DAY + 5)
    again = await start_service(clock=clock, rotation_days=1)
    assert names(again.services.config.db_dir) == [old.name, again.db_file.name]
    assert indexes(old) == SEED_INDEXES
    assert indexes(again.db_file) == LIVE_INDEXES


async def test_go_files_are_migrated_the_continued_one_drops_the_index(
    start_service: StartService, config: Config
) -> None:
    config.db_dir.mkdir(parents=True)
    older = config.db_dir / "results_2025-01-01_00-00-00.db"
    newer = config.db_dir / "results_2025-01-02_00-00-00.db"
    seed_file(older)
    seed_file(newer)
    assert indexes(newer) == SEED_INDEXES

    with capture_logs() as logs:
        running = await start_service(rotation_days=10_000)  # the names say 2025
    assert running.db_file == newer
    for path in (older, newer):
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert query(path, HOP_QUERY, ("10.0.0.1",)) == [(1,)]
    assert indexes(older) == SEED_INDEXES
    assert indexes(newer) == LIVE_INDEXES
    dropped = [e for e in logs if e["event"] == "hop-IP index dropped from the continued file"]
    assert [e["file"] for e in dropped] == [newer.name]
    await post(running, batch(1, 1, hops=2))
    assert sorted(ips_in(newer)) == ["10.0.1.0", "198.51.100.1"]


async def test_readers_keep_reading_while_the_old_file_is_sealed(
    start_service: StartService, tmp_path: Path
) -> None:
    """A connection that has the file open all along (a dashboard) reads it
    before, during and after the seal, and the main file alone ends up holding
    every row and the index (what `/dump?file=` streams)."""
    clock = FakeClock()
    running = await start_service(clock=clock)
    first = running.db_file
    await post(running, batch(1, 5, hops=3))
    dashboard = sqlite3.connect(f"{first.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert dashboard.execute(HOP_QUERY, ("10.1.0.1",)).fetchone() == (5,)
        clock.advance(60)
        await rotate(running)
        assert dashboard.execute(HOP_QUERY, ("10.1.0.1",)).fetchone() == (5,)
        plan = dashboard.execute(f"EXPLAIN QUERY PLAN {HOP_QUERY}", ("x",)).fetchall()
        assert HOP_INDEX in str(plan)
        alone = tmp_path / "alone.db"
        shutil.copyfile(first, alone)  # the main file only, no -wal
        assert indexes(alone) == SEED_INDEXES
        assert ips_in(alone) == [f"10.0.1.{i}" for i in range(5)]
    finally:
        dashboard.close()


async def test_a_reader_that_holds_on_leaves_the_file_unsealed_until_start_up(
    start_service: StartService, tmp_path: Path
) -> None:
    """When a read transaction keeps the WAL (with the new index) from being
    folded in, the file is not marked sealed: `/dump?file=` then serves a
    snapshot (with the index), and the next start-up finishes the seal."""
    clock = FakeClock()
    running = await start_service(clock=clock, seal_wait_s=0.05)
    first = running.db_file
    await post(running, batch(1, 2, hops=3))
    reader = sqlite3.connect(f"{first.resolve().as_uri()}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM ping_results").fetchone() == (2,)
        clock.advance(60)
        with capture_logs() as logs:
            await rotate(running)
        assert "sealing the old results file failed" in [e["event"] for e in logs]
        resp = await running.results.get("/dump", params={"file": first.name})
        assert resp.status == 200
        copy = tmp_path / "copy.db"
        copy.write_bytes(await resp.read())
        assert indexes(copy) == SEED_INDEXES
        assert ips_in(copy) == ["10.0.1.0", "10.0.1.1"]
        reader.execute("COMMIT")
    finally:
        reader.close()
    await stop(running)

    await start_service(clock=clock)
    assert indexes(first) == SEED_INDEXES
    assert journal_mode(first) == "delete"


async def test_dump_of_the_live_file_has_every_seed_index(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service(clock=FakeClock())
    await post(running, batch(1, 3, hops=4))
    resp = await running.results.get("/dump")
    assert resp.status == 200
    copy = tmp_path / "copy.db"
    copy.write_bytes(await resp.read())
    assert int(resp.headers["Content-Length"]) == copy.stat().st_size
    assert indexes(copy) == SEED_INDEXES
    assert HOP_INDEX in hop_plan(copy)
    assert query(copy, HOP_QUERY, ("10.1.0.1",)) == [(3,)]
    assert query(copy, "PRAGMA integrity_check") == [("ok",)]
    assert indexes(running.db_file) == LIVE_INDEXES  # the live file is left as it is


async def test_dump_of_a_sealed_file_streams_it_as_it_is(
    start_service: StartService, tmp_path: Path
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    first = running.db_file
    await post(running, batch(1, 3, hops=4))
    clock.advance(60)
    await rotate(running)
    resp = await running.results.get("/dump", params={"file": first.name})
    assert resp.status == 200
    assert await resp.read() == first.read_bytes()
    assert indexes(first) == SEED_INDEXES
