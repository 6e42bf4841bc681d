"""Auth: ingest and admin tokens, loopback-only admin, refusals counted and never logged."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from output_service.app import create_results_app
from output_service.config import Config, load_config
from output_service.handlers.auth import is_loopback, log_auth_mode, parse_tokens, token_matches
from output_service.services import Services
from tests.conftest import StartService, make_result, serve_app

INGEST = "ingest-secret-1"
INGEST_NEXT = "ingest-secret-2"
ADMIN = "admin-secret-1"


def refusals(services: Services, scope: str, reason: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "output_service_auth_refusals_total", {"scope": scope, "reason": reason}
    )
    return value or 0.0


async def test_ingest_is_open_without_a_token(start_service: StartService) -> None:
    running = await start_service()
    resp = await running.results.post("/results", json=[make_result("192.0.2.1")])
    assert resp.status == 200
    assert running.rows("SELECT ip FROM ping_results") == [("192.0.2.1",)]


async def test_ingest_token_missing_or_wrong_is_refused_and_nothing_stored(
    start_service: StartService,
) -> None:
    running = await start_service(ingest_token=f"{INGEST},{INGEST_NEXT}")
    missing = await running.results.post("/results", json=[make_result("192.0.2.1")])
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="output-service"'
    body = await missing.json()
    assert body["status"] == "error"
    wrong = await running.results.post(
        "/results",
        json=[make_result("192.0.2.2")],
        headers={"Authorization": f"Bearer {INGEST}x"},
    )
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    wrong_key = await running.results.post(
        "/results", json=[make_result("192.0.2.3")], headers={"X-API-Key": "nope"}
    )
    assert wrong_key.status == 401
    assert running.rows("SELECT count(*) FROM ping_results") == [(0,)]
    assert refusals(running.services, "ingest", "missing") == 1
    assert refusals(running.services, "ingest", "wrong") == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {INGEST}"},
        {"Authorization": f"bearer   {INGEST_NEXT}"},
        {"X-API-Key": INGEST_NEXT},
    ],
)
async def test_ingest_accepts_any_listed_token_either_header(
    start_service: StartService, headers: dict[str, str]
) -> None:
    running = await start_service(ingest_token=f" {INGEST} , {INGEST_NEXT} ,")
    resp = await running.results.post("/results", json=[make_result("192.0.2.9")], headers=headers)
    assert resp.status == 200
    assert running.rows("SELECT ip FROM ping_results") == [("192.0.2.9",)]


async def test_ingest_token_is_not_an_admin_token(start_service: StartService) -> None:
    running = await start_service(ingest_token=INGEST, admin_token=ADMIN)
    for method, path in (("POST", "/rotate"), ("GET", "/dump"), ("GET", "/files")):
        resp = await running.results.request(
            method, path, headers={"Authorization": f"Bearer {INGEST}"}
        )
        assert resp.status == 401, path
    admin_on_ingest = await running.results.post(
        "/results", json=[make_result()], headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert admin_on_ingest.status == 401
    assert refusals(running.services, "admin", "wrong") == 3


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/rotate"), ("GET", "/dump"), ("GET", "/dump?file=x.db"), ("GET", "/files")],
)
async def test_admin_endpoints_refuse_without_the_admin_token(
    start_service: StartService, method: str, path: str
) -> None:
    running = await start_service(admin_token=ADMIN)
    resp = await running.results.request(method, path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert (await resp.json())["status"] == "error"
    assert refusals(running.services, "admin", "missing") == 1


async def test_health_port_stays_open_with_tokens_set(start_service: StartService) -> None:
    running = await start_service(ingest_token=INGEST, admin_token=ADMIN)
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        resp = await running.health.get(path)
        assert resp.status == 200, path


def _pretend_remote(address: str) -> Any:
    """Stand in for a client on another host: the app sees `address` as the peer,
    as it would behind a proxy-aware middleware (tests can bind loopback only)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return middleware


async def _client_from(
    aiohttp_client: Any, config: Config, address: str, **overrides: Any
) -> tuple[Services, TestClient[Any, Any]]:
    services = Services.build(
        dataclasses.replace(config, **overrides), registry=CollectorRegistry()
    )
    app = create_results_app(services)
    app.middlewares.insert(0, _pretend_remote(address))
    return services, await serve_app(aiohttp_client, app, results=True)


@pytest.mark.parametrize("path", ["/rotate", "/dump", "/files"])
async def test_admin_without_token_refuses_other_hosts(
    aiohttp_client: Any, config: Config, path: str
) -> None:
    services, client = await _client_from(aiohttp_client, config, "198.51.100.7")
    resp = await client.request("POST" if path == "/rotate" else "GET", path)
    assert resp.status == 403
    assert "WWW-Authenticate" not in resp.headers
    assert refusals(services, "admin", "not_loopback") == 1


async def test_ingest_without_token_is_open_to_other_hosts(
    aiohttp_client: Any, config: Config
) -> None:
    _, client = await _client_from(aiohttp_client, config, "198.51.100.7")
    resp = await client.post("/results", json=[make_result("192.0.2.5")])
    assert resp.status == 200


async def test_tokens_never_appear_in_logs(start_service: StartService) -> None:
    running = await start_service(ingest_token=INGEST, admin_token=ADMIN)
    with capture_logs() as logs:
        await running.results.post("/results", json=[make_result()], headers={"X-API-Key": "bad"})
        await running.results.post(
            "/results", json=[make_result()], headers={"Authorization": f"Bearer {INGEST}"}
        )
        await running.results.get("/files", headers={"X-API-Key": ADMIN[:-1]})
        log_auth_mode(running.services.config)
    text = repr(logs)
    assert logs, "expected log lines"
    for secret in (INGEST, ADMIN, ADMIN[:-1]):
        assert secret not in text
    assert INGEST not in repr(running.services.config)


def test_startup_log_says_once_that_ingest_is_open(config: Config) -> None:
    with capture_logs() as logs:
        log_auth_mode(config)
    open_lines = [e for e in logs if "ingest is open" in e["event"]]
    assert len(open_lines) == 1
    assert open_lines[0]["log_level"] == "warning"


def test_tokens_from_flags_and_environment() -> None:
    config = load_config(["--admin-token", "a1,a2"], {"OUTPUT_SERVICE_INGEST_TOKEN": "i1"})
    assert parse_tokens(config.admin_token) == (b"a1", b"a2")
    assert parse_tokens(config.ingest_token) == (b"i1",)


def test_token_matching() -> None:
    tokens = parse_tokens("alpha, beta")
    assert token_matches("beta", tokens)
    assert not token_matches("bet", tokens)
    assert not token_matches("", tokens)
    assert not token_matches("beta ", tokens)
    assert not token_matches("\udcff", tokens)
    assert parse_tokens(" , ,") == ()


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_is_loopback(remote: str | None, expected: bool) -> None:
    assert is_loopback(remote) is expected
