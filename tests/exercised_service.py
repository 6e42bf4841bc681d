"""The real service as a process, driven through the paths that create labelled series
(stored, invalid, refused, unauthenticated, rotated, dumped, hops sent to an input
service that is down), so that its /metrics shows every name a dashboard or an alert
may use. Used by the Prometheus and Grafana tests."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_result
from tests.service_process import ServiceProcess, start_service, wait_until

INGEST_TOKEN = "exercise-ingest-token"


def closed_port() -> int:
    """A loopback port nobody listens on: the hop sender's POSTs are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one request; 4xx and 5xx are answers, not exceptions."""
    req = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def metric_sample_names(text: str) -> set[str]:
    """Every sample name of an exposition (`x_total`, `x_bucket`, `x_count`, ...)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
    return names


def exercise(service: ServiceProcess) -> None:
    """Drive every path that makes a labelled series appear."""
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {INGEST_TOKEN}"}
    good = json.dumps([make_result("192.0.2.10", hops=3), make_result("192.0.2.11", error="x")])
    results = service.url("/results")
    assert request(results, good.encode(), {**auth, "X-Node-ID": "node-a"})[0] == 200
    assert (
        request(results, gzip.compress(good.encode()), {**auth, "Content-Encoding": "gzip"})[0]
        == 200
    )
    assert request(results, b'[{"ip": "nope"}]', auth)[0] == 400
    assert request(results, b"\x1f\x8b broken", {**auth, "Content-Encoding": "gzip"})[0] == 400
    assert request(results, b"[]", {**auth, "Content-Encoding": "br"})[0] == 415
    assert request(results, good.encode(), {"Content-Type": "application/json"})[0] == 401
    assert request(service.url("/rotate"), b"", method="POST")[0] == 200
    assert request(service.url("/dump"))[0] == 200
    assert request(service.url("/files"))[0] == 200
    for path in ("/health", "/ready", "/stats", "/recent"):
        assert request(service.health_url(path))[0] == 200
    # the sender tries the input service (down) within hops_flush_interval_s
    wait_until(
        lambda: "output_service_hop_send_attempts_total" in metric_sample_names(scrape(service)),
        30,
        "a hop send attempt",
    )


def scrape(service: ServiceProcess) -> str:
    status, body = request(service.health_url("/metrics"))
    assert status == 200
    return body.decode()


@contextmanager
def exercised_service(tmp_dir: Path, *args: str) -> Iterator[ServiceProcess]:
    """A started and exercised service; stopped (SIGTERM, exit 0) afterwards."""
    service = start_service(
        tmp_dir / "data",
        f"--input-url=http://127.0.0.1:{closed_port()}/hops",
        *args,
        env={
            "OUTPUT_SERVICE_INGEST_TOKEN": INGEST_TOKEN,
            "OUTPUT_SERVICE_HOPS_FLUSH_INTERVAL_S": "0.05",
            "OUTPUT_SERVICE_HOPS_FINAL_FLUSH_S": "0",
        },
    )
    try:
        exercise(service)
        yield service
    finally:
        if service.proc.poll() is None:
            assert service.terminate() == 0
