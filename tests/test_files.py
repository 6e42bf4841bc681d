"""GET /files, and /recent and /stats reading every retained file."""

from __future__ import annotations

from tests.conftest import StartService, make_result
from tests.rotation_support import FakeClock, post, rotate


async def test_files_lists_retained_files_with_their_contents(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, keep_files=3)
    db_dir = running.services.config.db_dir
    first = running.db_file.name
    await post(
        running,
        [
            make_result("192.0.2.1", timestamp="2026-01-01T10:00:00Z"),
            make_result("192.0.2.2", timestamp="2026-01-01T09:00:00+02:00", error="timeout"),
        ],
    )
    clock.advance(3600)
    second = await rotate(running)
    await post(running, [make_result("192.0.2.3", timestamp="2026-01-01T11:00:00.5Z")])

    resp = await running.results.get("/files")
    assert resp.status == 200
    body = await resp.json()
    assert body["count"] == 2
    assert body["files"] == [
        {
            "name": first,
            "size": (db_dir / first).stat().st_size,
            "results": 2,
            "first_result": "2026-01-01T07:00:00.000000000Z",
            "last_result": "2026-01-01T10:00:00.000000000Z",
            "created": "2026-01-01T00:00:00.000000Z",
            "current": False,
        },
        {
            "name": second,
            "size": body["files"][1]["size"],
            "results": 1,
            "first_result": "2026-01-01T11:00:00.500000000Z",
            "last_result": "2026-01-01T11:00:00.500000000Z",
            "created": "2026-01-01T01:00:00.000000Z",
            "current": True,
        },
    ]
    live = db_dir / second
    assert body["files"][1]["size"] >= live.stat().st_size  # main file plus its WAL


async def test_files_of_an_empty_file(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock())
    body = await (await running.results.get("/files")).json()
    assert body["files"][0]["results"] == 0
    assert body["files"][0]["first_result"] is None
    assert body["files"][0]["last_result"] is None


async def test_recent_reads_across_files_newest_first(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock)
    first = running.db_file.name
    await post(running, [make_result("192.0.2.1"), make_result("192.0.2.2")])
    clock.advance(1)
    second = await rotate(running)
    await post(running, [make_result("192.0.2.3")])

    resp = await running.health.get("/recent", params={"limit": "10"})
    assert resp.status == 200
    body = await resp.json()
    assert [(r["ip"], r["file"]) for r in body] == [
        ("192.0.2.3", second),
        ("192.0.2.2", first),
        ("192.0.2.1", first),
    ]
    body = await (await running.health.get("/recent", params={"limit": "2"})).json()
    assert [r["ip"] for r in body] == ["192.0.2.3", "192.0.2.2"]
    body = await (await running.health.get("/recent", params={"ip": "192.0.2.1"})).json()
    assert [(r["ip"], r["file"]) for r in body] == [("192.0.2.1", first)]


async def test_stats_count_every_retained_file_across_restarts(
    start_service: StartService,
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, keep_files=2)
    await post(running, [make_result("192.0.2.1"), make_result("192.0.2.2", error="x")])
    clock.advance(1)
    await rotate(running)
    await post(running, [make_result("192.0.2.3")])
    stats = await (await running.health.get("/stats")).json()
    assert (stats["total_results"], stats["successful_pings"], stats["failed_pings"]) == (3, 2, 1)
    await running.results.close()
    await running.health.close()

    again = await start_service(clock=clock, keep_files=2)
    stats = await (await again.health.get("/stats")).json()
    assert (stats["total_results"], stats["successful_pings"], stats["failed_pings"]) == (3, 2, 1)
    assert stats["retained_files"] == 2
    clock.advance(1)
    await rotate(again)  # the first file leaves, and its counts with it
    stats = await (await again.health.get("/stats")).json()
    assert (stats["total_results"], stats["successful_pings"], stats["failed_pings"]) == (1, 1, 0)
