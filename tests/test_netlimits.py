"""Descriptors and connections: under a low RLIMIT_NOFILE, hundreds of idle
connections to the results port leave the health port answering, ingest on an
open connection going on, and the log small. Connections past a port's cap get
a JSON 503 and are closed at once."""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import resource
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from structlog.testing import capture_logs

from output_service.netlimits import ACCEPT_ERROR, AcceptErrorLog, fd_budget
from tests.conftest import make_result
from tests.service_process import ServiceProcess, start_service, wait_until

FD_LIMIT = 256
IDLE = 400  # well past the descriptor limit of the service


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    running = start_service(
        tmp_path_factory.mktemp("fds") / "data",
        "--max-connections=100",
        "--health-max-connections=16",
        preexec_fn=low_fd_limit,
    )
    yield running
    if running.proc.poll() is None:
        running.kill9()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def post_batch(conn: http.client.HTTPConnection, ip: str) -> int:
    body = json.dumps([make_result(ip=ip)])
    conn.request("POST", "/results", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def metric(service: ServiceProcess, line_start: str) -> float:
    _, text = get(service.health_port, "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def test_idle_flood_leaves_health_and_ingest_answering(service: ServiceProcess) -> None:
    started = service.events("descriptor limit")[0]
    assert started["soft"] == FD_LIMIT
    assert (started["max_connections"], started["health_max_connections"]) == (100, 16)
    ingest = http.client.HTTPConnection("127.0.0.1", service.results_port, timeout=10)
    idle: list[socket.socket] = []
    try:
        assert post_batch(ingest, "192.0.2.1") == 200  # a node's keep-alive connection
        for _ in range(IDLE):
            idle.append(socket.create_connection(("127.0.0.1", service.results_port), timeout=10))
        # the service holds 99 of them besides the node's; the rest were answered and closed
        wait_until(
            lambda: (
                metric(service, 'output_service_refused_connections_total{port="results"}')
                >= IDLE - 99
            ),
            30,
            "the connections past the cap to be refused",
        )
        assert metric(service, 'output_service_open_connections{port="results"}') == 100
        for path in ("/health", "/ready"):
            assert get(service.health_port, path)[0] == 200
        assert post_batch(ingest, "192.0.2.2") == 200
        # a new connection past the cap: a JSON 503 at once, not a hang
        status, body = get(service.results_port, "/files")
        assert status == 503
        assert json.loads(body)["limit"] == "connections"
        refused = idle[-1]
        refused.settimeout(10)
        assert refused.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        ingest.close()
        for sock in idle:
            sock.close()
    wait_until(
        lambda: metric(service, 'output_service_open_connections{port="results"}') == 0,
        30,
        "the idle connections to be closed",
    )
    fresh = http.client.HTTPConnection("127.0.0.1", service.results_port, timeout=10)
    try:
        assert post_batch(fresh, "192.0.2.3") == 200
    finally:
        fresh.close()
    assert metric(service, "output_service_accept_errors_total") == 0
    assert service.terminate() == 0
    assert len(service.stderr()) < 2000, service.stderr()[:2000]


def test_caps_fit_under_the_descriptor_limit() -> None:
    # kept back: an eighth of the limit (at least 64) for files
    usual = fd_budget(1024, 4096, 64)
    assert (usual.reserve, usual.health, usual.results) == (128, 64, 1024 - 128 - 64)
    small = fd_budget(256, 4096, 64)
    assert (small.reserve, small.health, small.results) == (64, 48, 144)
    assert fd_budget(1_048_576, 4096, 64).results == 4096  # never raised above the setting


async def test_accept_errors_are_logged_once_per_interval() -> None:
    registry = CollectorRegistry()
    counter = Counter("accept_errors", "test", registry=registry)
    now = [0.0]
    handler = AcceptErrorLog(counter, clock=lambda: now[0])
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(handler)
    try:
        with capture_logs() as logs:
            for i in range(1000):
                now[0] = i * 0.01  # 1,000 failures over 10 s
                loop.call_exception_handler(
                    {"message": ACCEPT_ERROR, "exception": OSError(errno.EMFILE, "Too many")}
                )
    finally:
        loop.set_exception_handler(None)
    lines = [entry for entry in logs if entry["event"].startswith("accept failed")]
    assert len(lines) == 2  # at 0 s and at 5 s
    assert lines[1]["failures"] == 500
    assert registry.get_sample_value("accept_errors_total") == 1000
