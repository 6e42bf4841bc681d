"""The hop feedback loop end to end: the real app on real files, a real loopback
input service, hops read back from state.db with a separate connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import Running, StartService, make_result, query, wait_for
from tests.hops_input import InputService, Reply, free_port

FAST = {
    "hops_flush_interval_s": 0.01,
    "hops_backoff_base_s": 0.001,
    "hops_backoff_max_s": 0.01,
    "hops_final_flush_s": 1.0,
}


@pytest.fixture
async def input_service() -> AsyncIterator[InputService]:
    service = await InputService().start()
    yield service
    await service.close()


def traced(ip: str, *hops: str, timeout_ttl: int | None = None) -> dict[str, Any]:
    """A result whose traceroute went through `hops`."""
    result = make_result(ip)
    result["traceroute"] = {
        "method": "icmp",
        "completed": True,
        "hops": [
            {"ttl": i + 1, "ip": hop, "rtt": 1_000_000, "timeout": i + 1 == timeout_ttl}
            for i, hop in enumerate(hops)
        ],
    }
    return result


async def post(running: Running, *results: dict[str, Any]) -> None:
    response = await running.results.post("/results", json=list(results))
    assert response.status == 200, await response.text()


def state_rows(running: Running, sql: str) -> list[tuple[Any, ...]]:
    return query(running.services.config.db_dir / "state.db", sql)


def metric(running: Running, name: str, **labels: str) -> float:
    value = running.services.metrics.registry.get_sample_value(f"output_service_{name}", labels)
    return 0.0 if value is None else value


async def health_stats(running: Running) -> dict[str, Any]:
    response = await running.health.get("/health")
    assert response.status == 200
    stats: dict[str, Any] = (await response.json())["stats"]
    return stats


async def test_hops_arrive_once_across_batches(
    start_service: StartService, input_service: InputService
) -> None:
    running = await start_service(input_url=input_service.url, **FAST)
    await post(running, traced("192.0.2.1", "10.0.0.1", "198.51.100.7", "2001:DB8::1"))
    await post(
        running,
        traced("192.0.2.2", "10.0.0.1", "198.51.100.7", "", "203.0.113.9", timeout_ttl=3),
        traced("192.0.2.3", "127.0.0.1", "fe80::1", "224.0.0.5", "not-an-ip", "\x00", "10.0.0.1"),
    )
    await input_service.wait_for_hops(4)
    await wait_for(lambda: metric(running, "hops_sent_total") == 4, "4 hops sent")
    assert sorted(input_service.accepted) == [
        "10.0.0.1",
        "198.51.100.7",
        "2001:db8::1",
        "203.0.113.9",
    ]
    assert state_rows(running, "SELECT count(*) FROM outbox") == [(0,)]
    stats = await health_stats(running)
    assert (stats["hops_discovered"], stats["hops_sent"]) == (4, 4)
    response = await running.health.get("/stats")
    assert (await response.json())["hops_sent"] == 4
    assert metric(running, "hops_deduplicated_total") == 2
    assert metric(running, "hop_send_attempts_total", outcome="ok") >= 1


async def test_restart_between_batches_does_not_resend(
    start_service: StartService, input_service: InputService
) -> None:
    batch = [traced("192.0.2.1", "198.51.100.1", "198.51.100.2")]
    first = await start_service(input_url=input_service.url, **FAST)
    await post(first, *batch)
    await input_service.wait_for_hops(2)
    await first.results.close()
    await first.health.close()

    second = await start_service(input_url=input_service.url, **FAST)
    await post(second, *batch, traced("192.0.2.2", "198.51.100.3"))
    await input_service.wait_for_hops(3)
    # The repeated hops were never queued again, so they cannot be sent again.
    assert metric(second, "hops_discovered_total") == 1
    assert metric(second, "hops_deduplicated_total") == 2
    await wait_for(lambda: state_rows(second, "SELECT count(*) FROM outbox") == [(0,)], "empty")
    assert input_service.counts == {"198.51.100.1": 1, "198.51.100.2": 1, "198.51.100.3": 1}
    stats = await health_stats(second)
    assert (stats["hops_discovered"], stats["hops_sent"]) == (3, 3)  # totals survive restarts


async def test_hop_is_sent_again_after_the_resend_window(
    start_service: StartService, input_service: InputService
) -> None:
    now = [1_800_000_000.0]
    running = await start_service(
        clock=lambda: now[0], input_url=input_service.url, hop_resend_after_hours=2, **FAST
    )
    batch = traced("192.0.2.1", "198.51.100.1")
    await post(running, batch)
    await input_service.wait_for_hops(1)
    now[0] += 2 * 3600 - 1
    await post(running, batch)
    assert metric(running, "hops_deduplicated_total") == 1
    now[0] += 1
    await post(running, batch)
    await input_service.wait_for_hops(2)
    assert input_service.accepted == ["198.51.100.1", "198.51.100.1"]


async def test_input_down_then_up_receives_every_hop_once(start_service: StartService) -> None:
    late = InputService(free_port())
    running = await start_service(input_url=late.url, **FAST)
    hops = [f"198.51.100.{i}" for i in range(1, 31)]
    for i in range(0, 30, 10):
        await post(running, traced(f"192.0.2.{i + 1}", *hops[i : i + 10]))
    await wait_for(
        lambda: metric(running, "hop_send_attempts_total", outcome="connection_error") >= 3,
        "failed attempts while the input service is down",
    )
    assert state_rows(running, "SELECT count(*) FROM outbox") == [(30,)]
    assert metric(running, "hops_outbox_depth") == 30
    assert metric(running, "hops_oldest_waiting_age_seconds") >= 0
    with capture_logs() as logs:
        await late.start()
        try:
            await late.wait_for_hops(30)
            await wait_for(lambda: metric(running, "hops_outbox_depth") == 0, "empty outbox")
        finally:
            await late.close()
    assert late.counts == dict.fromkeys(hops, 1)
    assert any(entry["event"] == "input service is back" for entry in logs)


async def test_restart_with_hops_waiting_loses_none(start_service: StartService) -> None:
    late = InputService(free_port())
    first = await start_service(input_url=late.url, **FAST)
    await post(first, traced("192.0.2.1", "198.51.100.1", "198.51.100.2"))
    await first.results.close()  # final flush fails: nobody listens
    await first.health.close()
    assert query(first.services.config.db_dir / "state.db", "SELECT ip FROM outbox") == [
        ("198.51.100.1",),
        ("198.51.100.2",),
    ]
    await late.start()
    try:
        second = await start_service(input_url=late.url, **FAST)
        await late.wait_for_hops(2)
        await wait_for(lambda: metric(second, "hops_outbox_depth") == 0, "empty outbox")
        assert late.counts == {"198.51.100.1": 1, "198.51.100.2": 1}
    finally:
        await late.close()


async def test_server_errors_and_429_are_retried(
    start_service: StartService, input_service: InputService
) -> None:
    input_service.replies.extend(
        [Reply(500, "boom"), Reply(503), Reply(429, headers={"Retry-After": "0"})]
    )
    running = await start_service(input_url=input_service.url, **FAST)
    await post(running, traced("192.0.2.1", "198.51.100.1"))
    await input_service.wait_for_hops(1)
    assert [status for status, _ in input_service.requests] == [500, 503, 429, 200]
    assert metric(running, "hop_send_attempts_total", outcome="server_error") == 2
    assert metric(running, "hop_send_attempts_total", outcome="rate_limited") == 1
    await wait_for(lambda: metric(running, "hops_sent_total") == 1, "sent")


async def test_client_error_is_dead_lettered(
    start_service: StartService, input_service: InputService
) -> None:
    input_service.replies.append(Reply(400, '{"error": "hop 198.51.100.1 is not allowed"}'))
    running = await start_service(input_url=input_service.url, **FAST)
    with capture_logs() as logs:
        await post(running, traced("192.0.2.1", "198.51.100.1"))
        await wait_for(lambda: metric(running, "hops_dead_lettered_total") == 1, "dead letter")
    assert state_rows(running, "SELECT ip, status, response FROM dead_letters") == [
        ("198.51.100.1", 400, '{"error": "hop 198.51.100.1 is not allowed"}')
    ]
    assert state_rows(running, "SELECT count(*) FROM outbox") == [(0,)]
    refusal = [e for e in logs if e["event"].startswith("input service refused hops")]
    assert refusal and refusal[0]["status"] == 400 and "not allowed" in refusal[0]["response"]
    await post(running, traced("192.0.2.2", "198.51.100.2"))  # the loop goes on
    await input_service.wait_for_hops(1)
    assert input_service.accepted == ["198.51.100.2"]


async def test_outbox_cap_drops_the_oldest(start_service: StartService) -> None:
    late = InputService(free_port())
    running = await start_service(input_url=late.url, hops_outbox_max=5, **FAST)
    hops = [f"198.51.100.{i}" for i in range(1, 9)]
    with capture_logs() as logs:
        for i, hop in enumerate(hops):
            await post(running, traced(f"192.0.2.{i + 1}", hop))
    assert state_rows(running, "SELECT ip FROM outbox ORDER BY id") == [(h,) for h in hops[3:]]
    assert metric(running, "hops_dropped_total") == 3
    assert any(e["event"] == "hop outbox full, dropped the oldest hops" for e in logs)
    # Dropped hops are forgotten, so a later traceroute through them queues them again.
    assert state_rows(running, "SELECT count(*) FROM seen WHERE ip = '198.51.100.1'") == [(0,)]
    await late.start()
    try:
        await late.wait_for_hops(5)
        assert late.counts == dict.fromkeys(hops[3:], 1)
    finally:
        await late.close()


async def test_ingest_goes_on_while_the_input_service_hangs(
    start_service: StartService, input_service: InputService
) -> None:
    input_service.hold = asyncio.Event()
    running = await start_service(input_url=input_service.url, hops_batch_size=1, **FAST)
    for i in range(20):
        await post(running, traced(f"192.0.2.{i + 1}", f"198.51.100.{i + 1}"))
    assert running.rows("SELECT count(*) FROM ping_results") == [(20,)]
    assert metric(running, "hops_sent_total") == 0
    input_service.hold.set()
    await input_service.wait_for_hops(20)


async def test_empty_input_url_turns_the_loop_off(start_service: StartService) -> None:
    running = await start_service(input_url="")
    await post(running, traced("192.0.2.1", "198.51.100.1"))
    assert running.services.hops is None
    # state.db holds the durable idempotency keys, but no hop state at all
    state = Path(running.services.config.db_dir / "state.db")
    conn = sqlite3.connect(state)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"idempotency_keys"}
    stats = await health_stats(running)
    assert (stats["hops_discovered"], stats["hops_sent"]) == (0, 0)
