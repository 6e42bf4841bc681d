"""What a Go ping node sends and expects: nil slices, IPv4-mapped addresses, compact replies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Running, StartService, make_result, wait_for
from tests.hops_input import InputService


@pytest.fixture
async def input_service() -> AsyncIterator[InputService]:
    service = await InputService().start()
    yield service
    await service.close()


async def test_null_body_is_an_empty_batch_stored_as_nothing(service: Running) -> None:
    resp = await service.results.post(
        "/results", data=b"null", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200
    assert await resp.read() == b'{"status":"ok","received":0}'
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


async def test_replies_are_byte_identical_to_go(service: Running) -> None:
    resp = await service.results.post("/results", json=[make_result(), make_result()])
    assert await resp.read() == b'{"status":"ok","received":2}'
    resp = await service.results.post(
        "/results", data=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    body = await resp.read()
    assert body.startswith(b'{"status":"error","error":"invalid batch","errors":[{"index":0,')


async def test_ipv4_mapped_target_and_hop_share_one_form(
    start_service: StartService, input_service: InputService
) -> None:
    running = await start_service(
        input_url=input_service.url, hops_flush_interval_s=0.01, hops_backoff_base_s=0.01
    )
    item = make_result("::ffff:192.0.2.200", hops=1)
    item["traceroute"]["hops"][0]["ip"] = "::ffff:198.51.100.7"
    assert (await running.results.post("/results", json=[item])).status == 200
    assert running.rows("SELECT ip FROM ping_results") == [("192.0.2.200",)]
    assert running.rows("SELECT ip FROM traceroute_hops") == [("198.51.100.7",)]
    await input_service.wait_for_hops(1)
    assert input_service.accepted == ["198.51.100.7"]
    body = await (await running.health.get("/recent", params={"ip": "192.0.2.200"})).json()
    assert [r["ip"] for r in body] == ["192.0.2.200"]
    await wait_for(lambda: running.services.stats()["hops_sent"] == 1, "hop counted as sent")
