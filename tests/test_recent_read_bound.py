"""/recent goes through the read bound of /api/*: when every read slot is taken
it answers 503 with Retry-After and a JSON error (never a 500), while ingest
keeps answering 200; and a crowd of /recent readers gets 200s and 503s only."""

from __future__ import annotations

import asyncio
import contextlib

from tests.conftest import Running, StartService, make_result


async def post_batch(service: Running, first: int, count: int) -> int:
    batch = [
        make_result(f"198.51.{(first + i) >> 8 & 255}.{(first + i) & 255}", hops=3)
        for i in range(count)
    ]
    resp = await service.results.post("/results", json=batch)
    await resp.read()
    return resp.status


async def test_recent_is_503_with_retry_after_when_the_read_bound_is_full(
    start_service: StartService,
) -> None:
    service = await start_service(max_concurrent_reads=1)
    assert await post_batch(service, 0, 50) == 200
    gate = service.services.read_gate
    assert gate is not None
    async with contextlib.AsyncExitStack() as held:
        for _ in range(gate.max_concurrent):
            await held.enter_async_context(gate.slot())
        resp = await service.health.get("/recent?limit=1000")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert resp.content_type == "application/json"
        assert "too many reads" in (await resp.json())["error"]
        assert await post_batch(service, 100, 10) == 200  # ingest is not behind the bound
    resp = await service.health.get("/recent?limit=1000")
    assert resp.status == 200
    assert len(await resp.json()) == 60
    metrics = await (await service.health.get("/metrics")).text()
    assert "output_service_reads_refused_total 1.0" in metrics


async def test_a_crowd_of_recent_readers_gets_200_or_503_and_ingest_keeps_answering(
    start_service: StartService,
) -> None:
    service = await start_service(max_concurrent_reads=1)
    for n in range(10):
        assert await post_batch(service, n * 200, 200) == 200

    async def reader() -> tuple[int, str | None, object]:
        resp = await service.health.get("/recent?limit=1000")
        body = await resp.json()
        return resp.status, resp.headers.get("Retry-After"), body

    readers = [asyncio.create_task(reader()) for _ in range(20)]
    ingest = [await post_batch(service, 5000 + n * 100, 100) for n in range(4)]
    answers = await asyncio.gather(*readers)
    assert ingest == [200] * 4
    statuses = {status for status, _, _ in answers}
    assert statuses <= {200, 503}
    for status, retry_after, body in answers:
        if status == 503:
            assert retry_after == "2" and isinstance(body, dict) and body["error"]
        else:
            assert isinstance(body, list) and len(body) == 1000
