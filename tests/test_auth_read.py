"""read_token: the health port's stored data behind a token a browser can send too."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import Running, StartService, make_result

READ = "read-secret-1"
ADMIN = "admin-secret-1"


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def refusals(running: Running, reason: str) -> float:
    value = running.services.metrics.registry.get_sample_value(
        "output_service_auth_refusals_total", {"scope": "read", "reason": reason}
    )
    return value or 0.0


@pytest.fixture
async def guarded(start_service: StartService) -> Running:
    running = await start_service(read_token=READ, admin_token=ADMIN)
    assert (await running.results.post("/results", json=[make_result()])).status == 200
    return running


@pytest.mark.parametrize("path", ["/stats", "/recent", "/api/results", "/", "/static/app.js"])
async def test_stored_data_and_unknown_paths_need_the_read_token(
    guarded: Running, path: str
) -> None:
    resp = await guarded.health.get(path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="output-service"'
    body = await resp.json()
    assert body["status"] == "error" and "read token" in body["error"]


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json"])
async def test_probes_metrics_and_the_schema_stay_open(guarded: Running, path: str) -> None:
    assert (await guarded.health.get(path)).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {READ}"},
        {"X-API-Key": READ},
        basic(READ),
        basic(READ, user=""),
        {"Authorization": f"Bearer {ADMIN}"},  # an admin may read too
    ],
)
async def test_every_scheme_reads(guarded: Running, headers: dict[str, str]) -> None:
    resp = await guarded.health.get("/recent", headers=headers)
    assert resp.status == 200
    assert [r["ip"] for r in await resp.json()] == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        (basic("nope"), "wrong"),
        ({"Authorization": "Basic !!!not-base64"}, "missing"),
        ({"Authorization": f"Bearer {READ}x"}, "wrong"),
    ],
)
async def test_refusals_are_counted_by_reason(
    guarded: Running, headers: dict[str, str], reason: str
) -> None:
    before = refusals(guarded, reason)
    assert (await guarded.health.get("/stats", headers=headers)).status == 401
    assert refusals(guarded, reason) == before + 1


async def test_read_token_does_not_open_admin_or_ingest(start_service: StartService) -> None:
    running = await start_service(read_token=READ, ingest_token="ingest-1", admin_token=ADMIN)
    headers = {"Authorization": f"Bearer {READ}"}
    assert (await running.results.post("/rotate", headers=headers)).status == 401
    resp = await running.results.post("/results", json=[make_result()], headers=headers)
    assert resp.status == 401


async def test_without_read_token_reads_stay_open(service: Running) -> None:
    assert (await service.health.get("/stats")).status == 200
    assert (await service.health.get("/recent")).status == 200
