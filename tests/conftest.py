"""Shared fixtures: a Config on tmp_path, both apps on real loopback sockets, and
plain sqlite3 readers that look at the files the way an operator would."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings
from prometheus_client import CollectorRegistry

from output_service.app import create_health_app, create_results_app, runner_options
from output_service.config import Config
from output_service.handlers.common import SERVICES
from output_service.services import Services

# No timing assertions in tests, hypothesis's per-example deadline included: a
# loaded CI machine must not turn a slow example into a failure.
# a real PostgreSQL for the tests of the postgres backend (pg_server, pg_db, own_pg_server)
pytest_plugins = ["tests.pg_server"]

settings.register_profile("output-service", deadline=None)
settings.load_profile("output-service")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(db_dir=tmp_path / "data", host="127.0.0.1", port=0, health_port=0, input_url="")


@dataclasses.dataclass
class Running:
    """Both apps of one service, started against real files."""

    services: Services
    results: TestClient[Any, Any]
    health: TestClient[Any, Any]

    @property
    def db_file(self) -> Path:
        return self.services.storage.current_file

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return query(self.db_file, sql, params)


StartService = Callable[..., Awaitable[Running]]


@pytest.fixture
def start_service(aiohttp_client: Any, config: Config) -> StartService:
    """Start the service; keyword arguments override settings of `config`."""

    async def start(clock: Callable[[], float] | None = None, **overrides: Any) -> Running:
        cfg = dataclasses.replace(config, **overrides).validate()
        kwargs: dict[str, Any] = {"registry": CollectorRegistry()}
        if clock is not None:
            kwargs["clock"] = clock
        services = Services.build(cfg, **kwargs)
        results = await serve_app(aiohttp_client, create_results_app(services), results=True)
        health = await serve_app(aiohttp_client, create_health_app(services), results=False)
        if services.read_upkeep is not None:  # its start-up round: warm-up and pre-render
            await asyncio.wait_for(services.read_upkeep.first_round.wait(), 60)
        return Running(services, results, health)

    return start


async def serve_app(
    aiohttp_client: Any, app: web.Application, *, results: bool
) -> TestClient[Any, Any]:
    """`app` on a loopback socket with the runner options cli.py uses (app.runner_options).

    Passed as aiohttp_client(app, server_kwargs=...) they would be dropped: aiohttp's
    TestServer hands only start_server's keyword arguments to its AppRunner.
    """
    options = runner_options(app[SERVICES].config, results=results)
    # TestServer passes handler_cancellation=True itself (the same value) and would
    # refuse a second one
    assert options.pop("handler_cancellation") is True
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**options)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.fixture
async def service(start_service: StartService) -> Running:
    return await start_service()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read with a separate, plain sqlite3 connection, as an operator would."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def make_result(
    ip: str = "192.0.2.1",
    *,
    hops: int = 0,
    error: str = "",
    timestamp: str = "2026-01-02T03:04:05.123456789Z",
    **extra: Any,
) -> dict[str, Any]:
    """One result as a Go ping node sends it; `hops` adds a traceroute with that many hops."""
    result: dict[str, Any] = {
        "ip": ip,
        "sent": 4,
        "received": 4 if not error else 0,
        "packet_loss": 0.0 if not error else 100.0,
        "avg_rtt": 12_345_678,
        "timestamp": timestamp,
        "error": error,
    }
    if hops:
        result["traceroute"] = {
            "method": "icmp",
            "completed": True,
            "hops": [
                {"ttl": i + 1, "ip": f"10.{i}.0.1", "rtt": 1_000_000 * (i + 1)} for i in range(hops)
            ],
        }
    result.update(extra)
    return result


async def wait_for(
    condition: Callable[[], bool], what: str = "condition", limit_s: float = 15.0
) -> None:
    """Yield to the loop until `condition()` holds, failing after `limit_s`: for states
    that no event announces, such as "the writer has N batches queued" or "the
    input service received 4 hops"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)
