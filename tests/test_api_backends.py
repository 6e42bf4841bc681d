"""The same reads give the same answers on both backends.

`backend` is a fixture parametrised over "sqlite" and "postgres": a read test
takes `start_backend` instead of `start_service` and runs on both. The query
API's tests join here as those reads land on the postgres backend.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Running, StartService
from tests.pg_load import results


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
