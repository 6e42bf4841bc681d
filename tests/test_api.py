"""The query API against the real app over loopback, on seeded data across two files.

Every expected number is computed here from the seed, independently of the
service's code (plain sorted lists and ceil for nearest rank).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from tests.conftest import Running, StartService, make_result

A = "192.0.2.10"
B = "198.51.100.7"
P1 = ["10.0.0.1", None, "10.2.0.1"]
P2 = ["10.0.0.1", "10.1.9.9", "10.2.0.1"]


def _trace(path: list[str | None]) -> dict[str, Any]:
    return {
        "method": "icmp",
        "completed": True,
        "hops": [
            {"ttl": i + 1, "ip": ip or "", "rtt": 0 if ip is None else 1000, "timeout": ip is None}
            for i, ip in enumerate(path)
        ],
    }


def _ts(minute: int) -> str:
    return f"2026-01-01T{minute // 60:02d}:{minute % 60:02d}:00Z"


def seed_a_n1() -> list[dict[str, Any]]:
    """A from n1: ten results every 10 min from 00:00; RTT i+1 ms; the last one failed;
    path P1 for the first five, P2 after."""
    out = []
    for i in range(10):
        r = make_result(A, timestamp=_ts(10 * i), avg_rtt=(i + 1) * 1_000_000)
        r["traceroute"] = _trace(P1 if i < 5 else P2)
        if i == 9:
            r.update(error="timeout", received=0, packet_loss=100.0, avg_rtt=0)
        out.append(r)
    return out


def seed_a_n2() -> list[dict[str, Any]]:
    """A from n2 (second file): four results at 02:00.. every 15 min, RTT 20..50 ms, 25% loss."""
    return [
        make_result(
            A,
            timestamp=_ts(120 + 15 * i),
            avg_rtt=(i + 2) * 10_000_000,
            received=3,
            packet_loss=25.0,
            traceroute=_trace(P2),
        )
        for i in range(4)
    ]


def seed_b() -> list[dict[str, Any]]:
    return [make_result(B, timestamp=_ts(5 + i), avg_rtt=5_000_000) for i in range(3)]


async def _post(service: Running, batch: list[dict[str, Any]], node: str | None) -> None:
    headers = {"X-Node-ID": node} if node else {}
    resp = await service.results.post("/results", json=batch, headers=headers)
    assert resp.status == 200, await resp.text()


@pytest.fixture
async def seeded(start_service: StartService) -> Running:
    now = [1_767_232_800.0]  # 2026-01-01T02:00:00Z
    service = await start_service(clock=lambda: now[0])
    await _post(service, seed_a_n1(), "n1")
    await _post(service, seed_b(), None)
    assert (await service.results.post("/rotate")).status == 200
    now[0] += 600
    await _post(service, seed_a_n2(), "n2")
    service.now = now  # type: ignore[attr-defined]
    return service


def nearest(values: list[int], pct: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


async def get(service: Running, path: str, status: int = 200) -> Any:
    resp = await service.health.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_results_pages_cover_everything_once(seeded: Running) -> None:
    seen: list[tuple[str, int]] = []
    url: str | None = "/api/results?limit=4"
    pages = 0
    while url is not None:
        resp = await seeded.health.get(url)
        assert resp.status == 200
        body = await resp.json()
        assert body["count"] == len(body["results"]) <= 4
        if body["next"]:
            assert resp.headers["Link"] == f'<{body["next"]}>; rel="next"'
        seen += [(r["file"], r["id"]) for r in body["results"]]
        url = body["next"]
        pages += 1
    assert len(seen) == len(set(seen)) == 17
    assert pages == 5  # 4+4+4+4+1
    first = (await get(seeded, "/api/results?limit=1"))["results"][0]
    assert first["ip"] == A and first["node_id"] == "n2"  # newest arrival first
    assert first["traceroute"]["hops"][1] == {
        "ttl": 2,
        "ip": "10.1.9.9",
        "rtt": 1000,
        "timeout": False,
    }
    assert set(first) >= {
        "id",
        "ip",
        "sent",
        "received",
        "packet_loss",
        "avg_rtt",
        "timestamp",
        "error",
        "node_id",
        "received_at",
        "traceroute",
        "file",
    }


async def test_hops_404_when_loop_off(service: Running) -> None:
    body = await get(service, "/api/hops", status=404)
    assert "hop feedback loop is off" in body["error"]


async def test_pagination_under_concurrent_ingest(service: Running) -> None:
    for k in range(5):
        await _post(service, [make_result(f"192.0.2.{k + 1}") for _ in range(20)], "n1")
    before = 100
    stop = asyncio.Event()

    async def ingest() -> int:
        sent = 0
        while not stop.is_set():
            await _post(service, [make_result("203.0.113.9") for _ in range(10)], "n9")
            sent += 10
        return sent

    task = asyncio.create_task(ingest())
    seen: list[tuple[str, int]] = []
    url: str | None = "/api/results?limit=7&ip=192.0.2.3"
    while url is not None:
        body = await get(service, url)
        seen += [(r["file"], r["id"]) for r in body["results"]]
        url = body["next"]
        await asyncio.sleep(0)
    everything: list[tuple[str, int]] = []
    url = "/api/results?limit=9&node=n1"
    while url is not None:
        body = await get(service, url)
        everything += [(r["file"], r["id"]) for r in body["results"]]
        url = body["next"]
    stop.set()
    sent = await task
    assert sent > 0
    assert len(seen) == len(set(seen)) == 20
    assert len(everything) == len(set(everything)) == before


async def test_targets_cache_follows_new_rows(seeded: Running) -> None:
    before = (await get(seeded, "/api/targets?sort=results"))["targets"][0]
    assert before["results"] == 14
    await _post(seeded, [make_result(A, timestamp=_ts(300), avg_rtt=1_000)], "n3")
    after = (await get(seeded, "/api/targets?sort=results"))["targets"][0]
    assert after["results"] == 15 and after["nodes"] == 3 and after["rtt_min_ns"] == 1_000
    assert after["last_seen"] == "2026-01-01T05:00:00.000000000Z"


async def test_a_saturated_read_bound_is_503_with_retry_after(service: Running) -> None:
    gate = service.services.read_gate
    assert gate is not None
    held = [gate.slot() for _ in range(gate.max_concurrent)]
    for slot in held:
        await slot.__aenter__()
    try:
        resp = await service.health.get("/api/targets")
        assert resp.status == 503 and resp.headers["Retry-After"] == "2"
        assert "too many reads" in (await resp.json())["error"]
    finally:
        for slot in held:
            await slot.__aexit__(None, None, None)
    assert (await service.health.get("/api/targets")).status == 200
    metrics = await (await service.health.get("/metrics")).text()
    assert "output_service_reads_refused_total 1.0" in metrics
