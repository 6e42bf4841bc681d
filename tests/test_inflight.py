"""queue_max_mb: the bytes of batches held between read and reply are bounded.

The real app on a real file; the writer is held up for real by another
connection that owns the results file's write lock, so the first batch stays
in flight while the second arrives.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

from output_service.handlers.inflight import IN_FLIGHT, InFlight
from tests.conftest import Running, StartService, make_result, wait_for

BODY = [make_result(f"192.0.2.{i}", hops=20) for i in range(1, 5)]
SIZE_MB = len(json.dumps(BODY)) / (1024 * 1024)  # as aiohttp's client sends it


def in_flight(running: Running) -> InFlight:
    return running.results.app[IN_FLIGHT]


async def test_a_batch_past_the_bound_gets_503_until_the_held_one_commits(
    start_service: StartService,
) -> None:
    running = await start_service(queue_max_mb=1.5 * SIZE_MB)  # one body, not two
    blocker = sqlite3.connect(running.db_file, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next transaction waits for this
        first = asyncio.create_task(running.results.post("/results", json=BODY))
        await wait_for(lambda: in_flight(running).held > 0, "the first batch in flight")
        second = await running.results.post("/results", json=BODY)
        assert second.status == 503
        assert second.headers["Retry-After"] == "1"
        reply = await second.json()
        assert reply["limit"] == "queue_max_mb"
        assert "queue_max_mb" in reply["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await first).status == 200
    assert in_flight(running).held == 0
    third = await running.results.post("/results", json=BODY)
    assert third.status == 200
    assert running.rows("SELECT count(*) FROM ping_results") == [(8,)]
    value = running.services.metrics.registry.get_sample_value(
        "output_service_batches_total", {"outcome": "queue_full"}
    )
    assert value == 1.0


async def test_one_body_larger_than_the_bound_is_taken_when_nothing_is_held(
    start_service: StartService,
) -> None:
    running = await start_service(queue_max_mb=SIZE_MB / 2)
    for _ in range(2):
        response = await running.results.post("/results", json=BODY)
        assert response.status == 200
    assert running.rows("SELECT count(*) FROM ping_results") == [(8,)]
    assert in_flight(running).held == 0


async def test_a_refused_or_invalid_body_is_not_left_counted(service: Running) -> None:
    bad = await service.results.post(
        "/results", data=b"[{", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400
    assert in_flight(service).held == 0
