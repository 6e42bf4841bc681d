"""The same reads give the same answers on both backends.

`backend` is a fixture parametrised over "sqlite" and "postgres": a read test
takes `start_backend` instead of `start_service` and runs on both. The query
API's tests join here as those reads land on the postgres backend.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from typing import Any

import pytest

from tests.conftest import Running, StartService, make_result
from tests.hops_input import InputService, Reply
from tests.pg_load import results
from tests.test_api import P1, P2, A, B, _post, _ts, get, nearest, seed_a_n1, seed_a_n2, seed_b


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the backend (postgres: a fresh database on the suite's server)."""
    if request.param == "sqlite":
        return {}
    pytest.importorskip("asyncpg")
    pg_db = request.getfixturevalue("pg_db")
    return {"storage": "postgres", "database_url": pg_db.url}


@pytest.fixture
def start_backend(start_service: StartService, backend: dict[str, Any]) -> StartService:
    async def start(**overrides: Any) -> Running:
        return await start_service(**{**backend, **overrides})

    return start


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """What both backends must agree on (ids, arrival times and file names differ)."""
    return {k: v for k, v in item.items() if k not in ("id", "received_at", "file")}


async def test_recent_answers_the_same(start_backend: StartService) -> None:
    service = await start_backend()
    sent = results(6, hops=3)
    sent[2]["error"] = "timeout"
    sent[4]["traceroute"] = None
    for i in range(0, 6, 2):
        reply = await service.results.post(
            "/results", json=sent[i : i + 2], headers={"X-Node-ID": f"node-{i}"}
        )
        assert reply.status == 200
    body = await (await service.health.get("/recent?limit=4")).json()
    assert isinstance(body, list) and len(body) == 4
    got = [_comparable(r) for r in body]
    # newest first: the last batch's second result first
    assert [r["ip"] for r in got] == [sent[i]["ip"] for i in (5, 4, 3, 2)]
    assert got[0]["node_id"] == "node-4" and got[3]["node_id"] == "node-2"
    assert got[3]["error"] == "timeout"
    assert got[1]["traceroute"] is None
    assert got[0]["traceroute"] == {
        "method": "icmp",
        "completed": True,
        "error": None,
        "hops": [
            {"ttl": t + 1, "ip": f"198.51.100.{t + 1}", "rtt": 10, "timeout": False}
            for t in range(3)
        ],
    }
    assert got[0]["timestamp"] == "2026-03-01T10:00:00.123456789Z"
    only = await (await service.health.get(f"/recent?ip={sent[1]['ip']}")).json()
    assert [r["ip"] for r in only] == [sent[1]["ip"]]


# -- the query API on both backends ---------------------------------------------------
# The seed of tests/test_api.py (two nodes and batches without X-Node-ID), posted the
# same way to either backend; every expected number is computed here from the seed.

C = "203.0.113.20"
C_RTTS = [(37 * i) % 20 * 1000 + 1000 for i in range(20)]  # 20 values, shuffled


@pytest.fixture
async def seeded_backend(start_backend: StartService) -> Running:
    now = [time.time()]
    service = await start_backend(clock=lambda: now[0])
    await _post(service, seed_a_n1(), "n1")
    await _post(service, seed_b(), None)
    if service.services.storage.archive is not None:  # files: A's results in two of them
        assert (await service.results.post("/rotate")).status == 200
    await _post(service, seed_a_n2(), "n2")
    await _post(service, [make_result(C, timestamp=_ts(200), avg_rtt=r) for r in C_RTTS], "n3")
    service.now = now  # type: ignore[attr-defined]
    return service


async def _pages(service: Running, url: str | None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while url is not None:
        resp = await service.health.get(url)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        if body["next"]:
            assert resp.headers["Link"] == f'<{body["next"]}>; rel="next"'
        seen += body["results"]
        url = body["next"]
    return seen


async def test_results_pages_and_filters(seeded_backend: Running) -> None:
    everything = await _pages(seeded_backend, "/api/results?limit=4")
    assert len(everything) == 37
    assert len({(r["file"], r["id"]) for r in everything}) == 37
    # newest arrival first: newest file first, then by id ("" for a table)
    order = [(r["file"], r["id"]) for r in everything]
    assert order == sorted(order, reverse=True)
    first = _comparable(everything[0])
    assert first == {
        **make_result(C, avg_rtt=C_RTTS[-1]),
        "timestamp": "2026-01-01T03:20:00.000000000Z",
        "node_id": "n3",
        "traceroute": None,
    }
    a = [r for r in everything if r["ip"] == A]
    assert a[-1]["traceroute"] == {
        "method": "icmp",
        "completed": True,
        "error": "",
        "hops": [
            {"ttl": 1, "ip": "10.0.0.1", "rtt": 1000, "timeout": False},
            {"ttl": 2, "ip": "", "rtt": 0, "timeout": True},
            {"ttl": 3, "ip": "10.2.0.1", "rtt": 1000, "timeout": False},
        ],
    }
    assert a[-1]["received_at"].endswith("Z") and len(a[-1]["received_at"]) == 27

    async def count(q: str) -> int:
        return len(await _pages(seeded_backend, f"/api/results?limit=5&{q}"))

    assert await count(f"ip={A}") == 14
    assert await count("node=n1") == 10
    assert await count("node=null") == 3
    assert await count("failed=true") == 1
    assert await count("failed=false") == 36
    assert await count("since=2026-01-01T00:05:00Z&until=2026-01-01T00:30:00Z") == 5
    assert await count(f"ip={B}&node=n1") == 0


async def test_export_streams_every_match(seeded_backend: Running) -> None:
    resp = await seeded_backend.health.get(f"/api/results?format=ndjson&ip={A}")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    page = await _pages(seeded_backend, f"/api/results?ip={A}&limit=1000")
    assert lines == page
    resp = await seeded_backend.health.get("/api/results", headers={"Accept": "text/csv"})
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0][:3] == ["file", "id", "ip"] and len(rows) == 38
    assert {r[-1] for r in rows[1:] if r[2] == A} == {"10.0.0.1|*|10.2.0.1", P2_TEXT}


P2_TEXT = "10.0.0.1|10.1.9.9|10.2.0.1"


async def test_targets_exact_percentiles(seeded_backend: Running) -> None:
    body = await get(seeded_backend, "/api/targets")
    assert [t["ip"] for t in body["targets"]] == [A, B, C]  # loss, then ip
    a_rtts = [(i + 1) * 1_000_000 for i in range(9)] + [(i + 2) * 10_000_000 for i in range(4)]
    assert body["targets"][0] == {
        "ip": A,
        "results": 14,
        "failed": 1,
        "loss_pct": round((100.0 + 4 * 25.0) / 14, 3),
        "rtt_min_ns": 1_000_000,
        "rtt_avg_ns": round(sum(a_rtts) / len(a_rtts)),
        "rtt_p50_ns": nearest(a_rtts, 50),
        "rtt_p95_ns": nearest(a_rtts, 95),
        "rtt_max_ns": 50_000_000,
        "nodes": 2,
        "first_seen": "2026-01-01T00:00:00.000000000Z",
        "last_seen": "2026-01-01T02:45:00.000000000Z",
    }
    c = body["targets"][2]
    # 20 values: p95 is the 19th (ceil(0.95 * 20)), p50 the 10th
    assert (c["rtt_p50_ns"], c["rtt_p95_ns"]) == (sorted(C_RTTS)[9], sorted(C_RTTS)[18])
    assert c["rtt_avg_ns"] == round(sum(C_RTTS) / 20) and c["nodes"] == 1
    by_results = await get(seeded_backend, "/api/targets?sort=results&limit=2&offset=1")
    assert [t["ip"] for t in by_results["targets"]] == [A, B]
    only_b = await get(seeded_backend, "/api/targets?node=null")
    assert [t["ip"] for t in only_b["targets"]] == [B]
    assert only_b["targets"][0]["nodes"] == 1 and only_b["targets"][0]["rtt_p95_ns"] == 5_000_000
    rtt = await get(seeded_backend, "/api/targets?sort=rtt")
    assert [t["ip"] for t in rtt["targets"]] == [A, B, C]  # medians 7 ms, 5 ms, 10 us


async def test_target_series(seeded_backend: Running) -> None:
    body = await get(
        seeded_backend,
        f"/api/targets/{A}?step=1h&since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z",
    )
    assert body["results"] == 14 and body["step_s"] == 3600
    hour0 = [(i + 1) * 1_000_000 for i in range(6)]
    assert body["series"][0] == {
        "t": "2026-01-01T00:00:00Z",
        "results": 6,
        "loss_pct": 0.0,
        "rtt_p10_ns": nearest(hour0, 10),
        "rtt_p50_ns": nearest(hour0, 50),
        "rtt_p90_ns": nearest(hour0, 90),
        "rtt_min_ns": 1_000_000,
        "rtt_max_ns": 6_000_000,
    }
    assert [(b["t"], b["results"]) for b in body["series"]] == [
        ("2026-01-01T00:00:00Z", 6),
        ("2026-01-01T01:00:00Z", 4),
        ("2026-01-01T02:00:00Z", 4),
    ]
    assert (await get(seeded_backend, f"/api/targets/{A}?step=1d"))["series"][0]["results"] == 14
    assert body["series"][1]["loss_pct"] == 25.0 and body["series"][2]["rtt_p50_ns"] == 30_000_000
    await get(seeded_backend, "/api/targets/192.0.2.99", status=404)


async def test_routes_and_changes(seeded_backend: Running) -> None:
    body = await get(seeded_backend, f"/api/routes?ip={A}")
    assert [p["hops"] for p in body["paths"]] == [P2, P1]
    assert [(p["results"], p["nodes"]) for p in body["paths"]] == [(9, 2), (5, 1)]
    assert body["paths"][1]["last_seen"] == "2026-01-01T00:40:00.000000000Z"
    by_node = {c["node"]: c["changes"] for c in body["changes"]}
    assert by_node == {
        "n1": [{"at": "2026-01-01T00:50:00.000000000Z", "from": P1, "to": P2}],
        "n2": [],
    }
    assert (await get(seeded_backend, f"/api/routes?ip={B}"))["paths"] == []


async def test_nodes_and_silence(seeded_backend: Running) -> None:
    body = await get(seeded_backend, "/api/nodes")
    nodes = {n["node_id"]: n for n in body["nodes"]}
    assert set(nodes) == {"n1", "n2", "n3", None}
    assert [nodes[n]["results"] for n in ("n1", "n2", "n3", None)] == [10, 4, 20, 3]
    assert nodes["n1"]["failed"] == 1 and nodes["n1"]["batches"] == 1
    assert nodes["n1"]["remotes"] == ["127.0.0.1"]
    assert not any(n["silent"] for n in body["nodes"])
    seeded_backend.now[0] += 3600  # type: ignore[attr-defined]
    body = await get(seeded_backend, "/api/nodes")
    assert all(n["silent"] for n in body["nodes"])
    metrics = await (await seeded_backend.health.get("/metrics")).text()
    assert "output_service_silent_nodes 4.0" in metrics


BAD_PATHS = [
    "/api/results?limit=0",
    "/api/results?limit=abc",
    "/api/results?since=tomorrow",
    "/api/results?cursor=garbage!",
    "/api/results?cursor=WyJyZXN1bHRzXzIwMjYuZGIiLDVd",  # a (file, id) cursor of another file
    "/api/results?cursor=WyIiLC0xXQ",  # a negative id
    "/api/results?format=xml",
    "/api/results?ip=1.2.3",
    "/api/results?limit=1&limit=2",
    "/api/results?bogus=1",
    "/api/targets?sort=name",
    "/api/targets?ip=192.0.2.1",
    "/api/targets?until=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z",
    "/api/targets/not-an-ip",
    "/api/targets/%FF",
    "/api/targets/192.0.2.1?step=7m",
    "/api/routes",
    "/api/nodes?x=1",
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_bad_parameters_are_400(start_backend: StartService, path: str) -> None:
    service = await start_backend()
    await _post(service, seed_b(), None)
    resp = await service.health.get(path)
    body = await resp.json()
    if "WyJyZXN1bHRz" in path and service.services.config.storage != "postgres":
        assert resp.status == 200  # a cursor naming a file is SQLite's own kind
    else:
        assert resp.status == 400, body
        assert body["status"] == "error" and body["error"]


HOPS_FAST = {
    "hops_flush_interval_s": 0.01,
    "hops_backoff_base_s": 0.001,
    "hops_backoff_max_s": 0.01,
}


def _traced(ip: str, *path: str) -> dict[str, Any]:
    result = make_result(ip)
    result["traceroute"] = {
        "method": "icmp",
        "completed": True,
        "hops": [{"ttl": i + 1, "ip": hop, "rtt": 1000} for i, hop in enumerate(path)],
    }
    return result


async def test_hops_listing(start_backend: StartService) -> None:
    """Delivered hops and a dead letter, listed alike by both backends (the loop on,
    a real loopback input service)."""
    sink = await InputService().start()
    try:
        service = await start_backend(input_url=sink.url, **HOPS_FAST)
        await _post(service, [_traced("192.0.2.1", "198.51.100.3", "198.51.100.1")], "n1")
        await _post(service, [_traced("192.0.2.2", "198.51.100.2", "198.51.100.1")], "n1")
        await sink.wait_for_hops(3)

        async def settled(want_depth: int, want_dead: int) -> dict[str, Any]:
            deadline = time.monotonic() + 15
            while True:
                body: dict[str, Any] = await get(service, "/api/hops")
                waiting = sum(h["waiting"] for h in body["hops"])
                done = body["outbox_depth"] == want_depth == waiting
                if done and body["dead_letters_total"] == want_dead:
                    return body
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.02)

        body = await settled(0, 0)
        assert body["discovered"] == 3 and body["dead_letters"] == [] and body["next"] is None
        assert [h["ip"] for h in body["hops"]] == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        assert all(h["delivered"] and not h["waiting"] for h in body["hops"]), body
        assert all(h["last_queued"].endswith("Z") for h in body["hops"])
        sink.replies.append(Reply(400, "not a target we take"))
        await _post(service, [_traced("192.0.2.3", "198.51.100.9")], "n1")
        body = await settled(0, 1)
        assert [(d["ip"], d["status"], d["response"]) for d in body["dead_letters"]] == [
            ("198.51.100.9", 400, "not a target we take")
        ]
        page = await service.health.get("/api/hops?limit=2&offset=1")
        assert page.status == 200
        listed = await page.json()
        assert [h["ip"] for h in listed["hops"]] == ["198.51.100.2", "198.51.100.3"]
        assert listed["next_offset"] == 3 and page.headers["Link"].endswith('rel="next"')
        last = await get(service, "/api/hops?offset=3")
        assert [(h["ip"], h["dead_lettered"], h["delivered"]) for h in last["hops"]] == [
            ("198.51.100.9", True, False)
        ]
        assert (await service.health.get("/api/hops?limit=-1")).status == 400
    finally:
        await sink.close()
