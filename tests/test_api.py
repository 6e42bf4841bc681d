"""The query API against the real app over loopback, on seeded data across two files.

Every expected number is computed here from the seed, independently of the
service's code (plain sorted lists and ceil for nearest rank).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
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


async def test_results_filters(seeded: Running) -> None:
    async def count(q: str) -> int:
        return int((await get(seeded, f"/api/results?limit=1000&{q}"))["count"])

    assert await count(f"ip={A}") == 14
    assert await count("node=n1") == 10
    assert await count("node=null") == 3
    assert await count("failed=true") == 1
    assert await count("failed=false") == 16
    assert (
        await count("since=2026-01-01T00:05:00Z&until=2026-01-01T00:30:00Z") == 5
    )  # B x3, A 10,20
    assert await count(f"ip={B}&node=n1") == 0


async def test_exports_ndjson_and_csv(seeded: Running) -> None:
    resp = await seeded.health.get(f"/api/results?format=ndjson&ip={A}")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = (await resp.text()).splitlines()
    assert len(lines) == 14 and all(json.loads(line)["ip"] == A for line in lines)
    resp = await seeded.health.get("/api/results", headers={"Accept": "text/csv"})
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0][:3] == ["file", "id", "ip"] and len(rows) == 18
    hops = {r[-1] for r in rows[1:] if r[2] == A}
    assert hops == {"10.0.0.1|*|10.2.0.1", "10.0.0.1|10.1.9.9|10.2.0.1"}


async def test_targets_exact_numbers(seeded: Running) -> None:
    body = await get(seeded, "/api/targets")
    assert [t["ip"] for t in body["targets"]] == [A, B]  # worst loss first
    a = body["targets"][0]
    rtts = [(i + 1) * 1_000_000 for i in range(9)] + [(i + 2) * 10_000_000 for i in range(4)]
    assert a == {
        "ip": A,
        "results": 14,
        "failed": 1,
        "loss_pct": round((100.0 + 4 * 25.0) / 14, 3),
        "rtt_min_ns": 1_000_000,
        "rtt_avg_ns": round(sum(rtts) / len(rtts)),
        "rtt_p50_ns": nearest(rtts, 50),
        "rtt_p95_ns": nearest(rtts, 95),
        "rtt_max_ns": 50_000_000,
        "nodes": 2,
        "first_seen": "2026-01-01T00:00:00.000000000Z",
        "last_seen": "2026-01-01T02:45:00.000000000Z",
    }
    assert (await get(seeded, "/api/targets?sort=results&limit=1"))["targets"][0]["ip"] == A
    only_b = await get(seeded, "/api/targets?node=null")
    assert [t["ip"] for t in only_b["targets"]] == [B]
    assert only_b["targets"][0]["rtt_p95_ns"] == 5_000_000


async def test_target_series_buckets(seeded: Running) -> None:
    body = await get(
        seeded, f"/api/targets/{A}?step=1h&since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z"
    )
    assert body["results"] == 14 and body["step_s"] == 3600
    assert [b["t"] for b in body["series"]] == [
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00Z",
        "2026-01-01T02:00:00Z",
    ]
    first, second, third = body["series"]
    hour0 = [(i + 1) * 1_000_000 for i in range(6)]
    assert first == {
        "t": "2026-01-01T00:00:00Z",
        "results": 6,
        "loss_pct": 0.0,
        "rtt_p10_ns": nearest(hour0, 10),
        "rtt_p50_ns": nearest(hour0, 50),
        "rtt_p90_ns": nearest(hour0, 90),
        "rtt_min_ns": 1_000_000,
        "rtt_max_ns": 6_000_000,
    }
    assert (
        second["results"] == 4 and second["loss_pct"] == 25.0 and second["rtt_max_ns"] == 9_000_000
    )
    assert third["results"] == 4 and third["rtt_p50_ns"] == 30_000_000
    assert (await get(seeded, f"/api/targets/{A}?step=1d"))["series"][0]["results"] == 14
    await get(seeded, "/api/targets/203.0.113.1", status=404)


async def test_route_changes(seeded: Running) -> None:
    body = await get(seeded, f"/api/routes?ip={A}")
    assert [p["hops"] for p in body["paths"]] == [P2, P1]
    assert body["paths"][0]["results"] == 9 and body["paths"][0]["nodes"] == 2
    assert body["paths"][1]["first_seen"] == "2026-01-01T00:00:00.000000000Z"
    assert body["paths"][1]["last_seen"] == "2026-01-01T00:40:00.000000000Z"
    by_node = {c["node"]: c["changes"] for c in body["changes"]}
    assert by_node["n1"] == [{"at": "2026-01-01T00:50:00.000000000Z", "from": P1, "to": P2}]
    assert by_node["n2"] == []


async def test_nodes_and_silence(seeded: Running) -> None:
    body = await get(seeded, "/api/nodes")
    nodes = {n["node_id"]: n for n in body["nodes"]}
    assert set(nodes) == {"n1", "n2", None}
    assert (
        nodes["n1"]["batches"] == 1 and nodes["n1"]["results"] == 10 and nodes["n1"]["failed"] == 1
    )
    assert nodes["n1"]["remotes"] == ["127.0.0.1"]
    assert nodes["n2"]["last_seen"] == "2026-01-01T02:10:00.000000Z"
    # n1 sent exactly 600 s ago (the default): not yet silent; None sent at the same time
    assert [nodes[n]["silent"] for n in ("n1", "n2", None)] == [False, False, False]
    seeded.now[0] += 601  # type: ignore[attr-defined]
    body = await get(seeded, "/api/nodes")
    assert all(n["silent"] for n in body["nodes"])
    metrics = await (await seeded.health.get("/metrics")).text()
    assert "output_service_silent_nodes 3.0" in metrics


@pytest.mark.parametrize(
    "path",
    [
        "/api/results?limit=0",
        "/api/results?limit=abc",
        "/api/results?since=tomorrow",
        "/api/results?cursor=garbage!",
        "/api/results?format=xml",
        "/api/results?ip=1.2.3",
        "/api/results?limit=1&limit=2",
        "/api/results?bogus=1",
        "/api/targets?sort=name",
        "/api/targets?ip=192.0.2.1",
        "/api/targets/not-an-ip",
        "/api/targets/192.0.2.1?step=7m",
        "/api/routes",
        "/api/nodes?x=1",
        "/api/hops?limit=-1",
    ],
)
async def test_bad_parameters_are_400_json(service: Running, path: str) -> None:
    resp = await service.health.get(path)
    if path.startswith("/api/hops"):
        assert resp.status == 404  # the loop is off in this config
    else:
        assert resp.status == 400
    body = await resp.json()
    assert body["status"] == "error" and body["error"]


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
