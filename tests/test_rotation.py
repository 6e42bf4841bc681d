"""Rotation by hand, by size and by age; retention; rotation failing safely."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from structlog.testing import capture_logs

from output_service.storage.sqlite.inventory import temp_dir
from tests.conftest import Running, StartService, make_result, query, wait_for
from tests.rotation_support import (
    DAY,
    FakeClock,
    batch,
    ips_by_file,
    ips_in,
    journal_mode,
    metric,
    names,
    post,
    rotate,
    settled,
)


async def test_rotate_starts_a_new_file_and_seals_the_old(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    db_dir = running.services.config.db_dir
    first = running.db_file
    assert first.name == "results_2026-01-01_00-00-00.db"
    await post(running, batch(1, 3))
    clock.advance(90)

    new_name = await rotate(running)

    assert new_name == "results_2026-01-01_00-01-30.db"
    assert names(db_dir) == [first.name, new_name]
    # the old file stands alone: no WAL beside it, everything in the main file
    assert not first.with_name(first.name + "-wal").exists()
    assert journal_mode(first) == "delete"
    assert ips_in(first) == ["10.0.1.0", "10.0.1.1", "10.0.1.2"]
    await post(running, batch(2, 2))
    assert ips_in(db_dir / new_name) == ["10.0.2.0", "10.0.2.1"]
    stats = await (await running.health.get("/stats")).json()
    assert stats["current_db_file"] == new_name
    assert stats["last_rotation"] == "2026-01-01T00:01:30.000000Z"
    assert stats["total_results"] == 5
    assert metric(running, "output_service_rotations_total", reason="manual") == 1


async def test_two_rotations_in_one_second_get_a_suffix(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock())
    assert await rotate(running) == "results_2026-01-01_00-00-00_1.db"
    assert await rotate(running) == "results_2026-01-01_00-00-00_2.db"


async def test_size_limit_rotates_between_batches(start_service: StartService) -> None:
    running = await start_service(max_size_mb=0.2, keep_files=100)
    db_dir = running.services.config.db_dir
    for tag in range(40):
        await post(running, batch(tag, 20, hops=5))
    await settled(running)
    by_file = ips_by_file(db_dir)
    assert len(by_file) > 2
    assert metric(running, "output_service_rotations_total", reason="size") == len(by_file) - 1
    stored = [ip for ips in by_file.values() for ip in ips]
    assert sorted(stored) == sorted(r["ip"] for tag in range(40) for r in batch(tag, 20))
    for ips in by_file.values():  # whole batches only: each file holds 20 of every tag
        tags = {ip.rsplit(".", 1)[0] for ip in ips}
        assert len(ips) == 20 * len(tags)


async def test_age_limit_rotates_on_the_injected_clock(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, rotation_days=0.5)
    db_dir = running.services.config.db_dir
    await post(running, batch(1, 1))
    clock.advance(0.5 * DAY - 1)
    await post(running, batch(2, 1))
    assert len(names(db_dir)) == 1
    clock.advance(1)
    # this batch still lands in the old file; the check after its commit rotates
    await post(running, batch(3, 1))
    await wait_for(lambda: len(names(db_dir)) == 2)
    await post(running, batch(4, 1))
    assert ips_by_file(db_dir) == {
        "results_2026-01-01_00-00-00.db": ["10.0.1.0", "10.0.2.0", "10.0.3.0"],
        "results_2026-01-01_12-00-00.db": ["10.0.4.0"],
    }
    assert metric(running, "output_service_rotations_total", reason="age") == 1


async def test_many_rotations_under_concurrent_ingest(start_service: StartService) -> None:
    """Every acknowledged result is in exactly one file, and no batch is split."""
    running = await start_service(max_size_mb=0.3, keep_files=1000)
    db_dir = running.services.config.db_dir
    acked: list[str] = []

    async def sender(worker: int) -> None:
        for n in range(30):
            results = batch(worker * 30 + n, 8, hops=3)
            await post(running, results)
            acked.extend(r["ip"] for r in results)

    async def rotator() -> None:
        for _ in range(15):
            await rotate(running)
            await asyncio.sleep(0)

    await asyncio.gather(*(sender(w) for w in range(6)), rotator())
    await settled(running)
    by_file = ips_by_file(db_dir)
    stored = [ip for ips in by_file.values() for ip in ips]
    assert len(stored) == len(set(stored)) == len(acked)
    assert set(stored) == set(acked)
    file_of_batch: dict[str, set[str]] = {}
    for name, ips in by_file.items():
        for ip in ips:
            file_of_batch.setdefault(ip.rsplit(".", 1)[0], set()).add(name)
    assert all(len(files) == 1 for files in file_of_batch.values())
    assert len(by_file) >= 16
    stats = await (await running.health.get("/stats")).json()
    assert stats["total_results"] == len(acked)


async def test_retention_keeps_the_newest_files(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, keep_files=2)
    db_dir = running.services.config.db_dir
    made = [running.db_file.name]
    for tag in range(4):
        await post(running, batch(tag, tag + 1))
        clock.advance(1)
        made.append(await rotate(running))
    assert names(db_dir) == made[-2:]
    assert running.db_file.name == made[-1]
    stats = await (await running.health.get("/stats")).json()
    assert stats["total_results"] == 4  # only the retained files count: 4 + 0
    assert stats["retained_files"] == 2
    assert metric(running, "output_service_deleted_files_total") == 3
    assert metric(running, "output_service_retained_files") == 2


async def test_retention_waits_for_a_reader(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock(), keep_files=1)
    storage = running.services.storage
    db_dir = running.services.config.db_dir
    first = running.db_file
    await post(running, batch(1, 2))
    registry = storage._registry  # a reader's hold, as /recent and /files take it
    (entry,) = registry.entries
    with registry.use(entry):
        second = await rotate(running)
        # retired: gone from the listing, but still on disk while it is read
        listed = await (await running.results.get("/files")).json()
        assert [f["name"] for f in listed["files"]] == [second]
        assert first.exists()
    assert not first.exists()
    assert names(db_dir) == [second]


async def test_a_dump_snapshot_does_not_hold_its_source(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock(), keep_files=1)
    storage = running.services.storage
    first = running.db_file
    await post(running, batch(1, 2))
    async with storage.archive.dump(None) as snapshot:
        second = await rotate(running)
        await wait_for(lambda: not first.exists())  # retention did not wait for the dump
        assert names(running.services.config.db_dir) == [second]
        assert snapshot.path.exists()
        assert query(snapshot.path, "SELECT count(*) FROM ping_results") == [(2,)]
    assert not snapshot.path.exists()


async def test_rotation_failure_keeps_ingest_going(
    start_service: StartService, tmp_path: Path
) -> None:
    """When no new file can be made, /rotate says so and ingest goes on in the old one."""
    running = await start_service()
    first = running.db_file
    staging = temp_dir(running.services.config.db_dir)
    shutil.rmtree(staging)
    staging.write_text("not a directory")  # new files are made here: none can be
    try:
        resp = await running.results.post("/rotate")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "error"
        assert "cannot start a new results file" in body["error"]
        await post(running, batch(1, 2))
        # a rotation that keeps failing is no secret: /ready and /health say why
        ready = await running.health.get("/ready")
        assert ready.status == 200
        ready_body = await ready.json()
        assert ready_body["status"] == "degraded"
        assert "rotation failing" in ready_body["degraded"][0]
        health = await running.health.get("/health")
        assert health.status == 200
        health_body = await health.json()
        assert health_body["status"] == "degraded"
        assert health_body["degraded"] == ready_body["degraded"]
    finally:
        staging.unlink()
    assert ips_in(first) == ["10.0.1.0", "10.0.1.1"]
    assert metric(running, "output_service_rotation_errors_total") == 1
    assert running.db_file == first
    # the operator removed the file in the way: the next rotation heals
    assert (await running.results.post("/rotate")).status == 200
    assert (await (await running.health.get("/ready")).json()) == {"status": "ready"}
    assert (await (await running.health.get("/health")).json())["status"] == "healthy"


async def test_removed_tmp_dir_heals_at_the_next_rotation(start_service: StartService) -> None:
    """`rmdir db_dir/tmp` must not switch rotation off: the size limit still rotates."""
    running = await start_service(max_size_mb=0.05)
    db_dir = running.services.config.db_dir
    first = running.db_file
    (db_dir / "tmp").rmdir()
    for n in range(40):
        await post(running, batch(n, 10))
        if running.db_file != first:
            break
    assert running.db_file != first, "the size limit never rotated"
    assert metric(running, "output_service_rotation_errors_total") == 0
    assert (db_dir / "tmp").is_dir()
    assert (await (await running.health.get("/ready")).json()) == {"status": "ready"}


async def stop(running: Running) -> None:
    await running.results.close()
    await running.health.close()


async def test_restart_continues_the_newest_file(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    await post(running, batch(1, 2))
    clock.advance(60)
    current = await rotate(running)
    await post(running, batch(2, 3))
    await stop(running)

    clock.advance(60)
    again = await start_service(clock=clock)
    assert again.db_file.name == current
    stats = await (await again.health.get("/stats")).json()
    assert stats["total_results"] == 5
    assert stats["last_rotation"] == "2026-01-01T00:01:00.000000Z"
    # read back from the retained files, not lost with the process
    assert stats["last_result_time"] == "2026-01-01T00:01:00.000000Z"
    await post(again, batch(3, 1))
    assert ips_in(again.db_file) == ["10.0.2.0", "10.0.2.1", "10.0.2.2", "10.0.3.0"]


async def test_restart_rotates_a_file_past_its_age(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, rotation_days=1)
    old = running.db_file.name
    await post(running, batch(1, 1))
    await stop(running)

    clock.advance(DAY + 5)
    again = await start_service(clock=clock, rotation_days=1)
    assert again.db_file.name == "results_2026-01-02_00-00-05.db"
    assert names(again.services.config.db_dir) == [old, again.db_file.name]
    assert metric(again, "output_service_rotations_total", reason="age") == 1
    stats = await (await again.health.get("/stats")).json()
    assert stats["total_results"] == 1


async def test_restart_remembers_idempotency_keys_of_older_files(
    start_service: StartService,
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    body = [make_result("192.0.2.7")]
    resp = await running.results.post("/results", json=body, headers={"Idempotency-Key": "k1"})
    assert resp.status == 200
    await rotate(running)
    await stop(running)

    again = await start_service(clock=clock)
    resp = await again.results.post("/results", json=body, headers={"Idempotency-Key": "k1"})
    assert resp.status == 200
    assert resp.headers.get("Idempotent-Replayed") == "true"
    assert ips_by_file(again.services.config.db_dir) == {
        "results_2026-01-01_00-00-00.db": ["192.0.2.7"],
        "results_2026-01-01_00-00-00_1.db": [],
    }


async def test_corrupt_and_foreign_files_are_quarantined(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    for tag in range(5):
        await post(running, batch(tag, 60, hops=5))
    good = await rotate(running)
    await post(running, batch(7, 1))
    await stop(running)
    db_dir = running.services.config.db_dir
    broken = db_dir / "results_2026-01-01_00-00-00.db"
    with broken.open("r+b") as fh:  # scribble over pages in the middle of the file
        fh.seek(4096 * 3)
        fh.write(b"\xa5" * 4096 * 4)
    (db_dir / "results_2025-12-31_00-00-00.db").write_bytes(b"this is not SQLite " * 100)

    with capture_logs() as logs:
        again = await start_service(clock=clock)
    assert names(db_dir) == [good]
    assert sorted(p.name for p in (db_dir / "quarantine").iterdir()) == [
        "results_2025-12-31_00-00-00.db",
        "results_2026-01-01_00-00-00.db",
    ]
    assert metric(again, "output_service_quarantined_files_total") == 2
    warned = {e["file"]: e["reason"] for e in logs if e["event"] == "results file quarantined"}
    assert warned.keys() == {"results_2025-12-31_00-00-00.db", "results_2026-01-01_00-00-00.db"}
    assert "not a database" in warned["results_2025-12-31_00-00-00.db"]
    stats = await (await again.health.get("/stats")).json()
    assert stats["total_results"] == 1
    await post(again, batch(8, 1))
    assert ips_in(db_dir / good) == ["10.0.7.0", "10.0.8.0"]
