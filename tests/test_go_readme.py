"""Every example and recipe of the Go service's README, run against this service.

The Go README is the contract (DESIGN.md). Its shell commands are kept here as the
README prints them and run with the real `curl` and `jq` (skipped, naming the
package, when they are not installed); only `localhost:8081`/`localhost:8091` are
pointed at the free ports of the service under test. Its request and response
bodies, which the README shows without a command, are sent and compared in
Python. The service runs as a process, as an operator starts it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from output_service import __version__
from output_service.config import load_config
from tests.service_process import ServiceProcess, start_service, wait_until

DEADLINE_S = 20

# --- the Go README, verbatim --------------------------------------------------------

RESULTS_BODY = """
[
  {
    "ip": "8.8.8.8",
    "sent": 4,
    "received": 4,
    "packet_loss": 0,
    "avg_rtt": 15000000,
    "timestamp": "2026-01-07T22:30:00Z",
    "traceroute": {
      "method": "icmp",
      "completed": true,
      "hops": [
        {"ttl": 1, "ip": "192.168.1.1", "rtt": 2000000},
        {"ttl": 2, "ip": "10.0.0.1", "rtt": 5000000},
        {"ttl": 3, "ip": "8.8.8.8", "rtt": 15000000}
      ]
    }
  }
]
"""
RESULTS_RESPONSE = """
{
  "status": "ok",
  "received": 1
}
"""
ROTATE_RESPONSE = """
{
  "status": "rotated",
  "file": "results_2026-01-07_22-30-45.db"
}
"""
HEALTH_RESPONSE = """
{
  "status": "healthy",
  "version": "0.0.1",
  "uptime": "2h15m30s",
  "stats": {
    "total_results": 15420,
    "successful_pings": 14890,
    "failed_pings": 530,
    "hops_discovered": 2341,
    "hops_sent": 2341,
    "last_result_time": "2026-01-07T22:30:15Z",
    "current_db_file": "results_2026-01-07.db",
    "current_db_size": 52428800,
    "last_rotation": "2026-01-07T00:00:00Z"
  }
}
"""
RECENT_RESPONSE = """
[
  {
    "id": 12345,
    "ip": "8.8.8.8",
    "sent": 4,
    "received": 4,
    "packet_loss": 0,
    "avg_rtt": 15000000,
    "timestamp": "2026-01-07T22:30:00Z"
  }
]
"""
METRICS_SAMPLES = ("output_service_total_results", "output_service_successful_pings")
CUSTOM_CONFIGURATION = """./output_service \\
  --port=8082 \\
  --health-port=8092 \\
  --input-url=http://input-service:8080/hops \\
  --db-dir=/var/lib/output_service \\
  --max-size-mb=200 \\
  --rotation-days=14 \\
  --keep-files=10 \\
  --verbose"""
CHECK_HEALTH = "curl http://localhost:8091/health"
VIEW_METRICS = "curl http://localhost:8091/metrics"
RECENT_FAILURES = "curl 'http://localhost:8091/recent?limit=50' | jq '.[] | select(.error != null)'"
BACKUP = "curl http://localhost:8081/dump -o backup.db"
MANUAL_ROTATION = "curl -X POST http://localhost:8081/rotate"
RECENT_QUERY = "GET /recent?limit=100&ip=8.8.8.8"

# --- helpers -------------------------------------------------------------------------


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package: {tool})")
    return path


def shell(command: str, service: ServiceProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a README command with only its host:port pointed at the service under test."""
    command = command.replace("localhost:8081", f"127.0.0.1:{service.results_port}")
    command = command.replace("localhost:8091", f"127.0.0.1:{service.health_port}")
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    return done


def http(url: str, body: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as resp:
        return resp.status, resp.read()


class _Hops(BaseHTTPRequestHandler):
    received: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def input_service() -> Iterator[ThreadingHTTPServer]:
    """The input service's `POST /hops`, as the README's integration section expects."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hops)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, input_service: ThreadingHTTPServer
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("go-readme")
    running = start_service(
        tmp / "data",
        f"--input-url=http://127.0.0.1:{input_service.server_address[1]}/hops",
        "--hops-flush-interval-s=0.05",
    )
    assert http(running.url("/results"), RESULTS_BODY.encode(), "POST")[0] == 200
    failed = json.loads(RESULTS_BODY)[0] | {"ip": "192.0.2.9", "error": "timeout"}
    failed.update({"received": 0, "packet_loss": 100, "traceroute": None})
    assert http(running.url("/results"), json.dumps([failed]).encode(), "POST")[0] == 200
    yield running
    if running.proc.poll() is None:
        assert running.terminate() == 0, running.stderr()


# --- the examples --------------------------------------------------------------------


def test_post_results_example_gets_the_readme_response(service: ServiceProcess) -> None:
    status, body = http(service.url("/results"), RESULTS_BODY.encode(), "POST")
    assert status == 200
    assert json.loads(body) == json.loads(RESULTS_RESPONSE)
    assert body == json.dumps(json.loads(RESULTS_RESPONSE), separators=(",", ":")).encode()


def test_custom_configuration_flags_parse_as_documented() -> None:
    argv = CUSTOM_CONFIGURATION.replace("\\\n", " ").split()[1:]
    config = load_config(argv, {})
    assert (config.port, config.health_port, config.input_url) == (
        8082,
        8092,
        "http://input-service:8080/hops",
    )
    assert (str(config.db_dir), config.max_size_mb, config.rotation_days) == (
        "/var/lib/output_service",
        200.0,
        14.0,
    )
    assert (config.keep_files, config.verbose) == (10, True)
    assert load_config(["-v"], {}).verbose is True


def test_version_and_help_flags() -> None:
    for flag, expected in (("--version", __version__), ("--help", "--keep-files")):
        done = subprocess.run(
            [sys.executable, "-m", "output_service", flag],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert done.returncode == 0 and expected in done.stdout


def test_check_health_recipe(service: ServiceProcess, tmp_path: Path) -> None:
    need("curl")
    body = json.loads(shell(CHECK_HEALTH, service, tmp_path).stdout)
    readme = json.loads(HEALTH_RESPONSE)
    assert set(readme) <= set(body) and set(readme["stats"]) <= set(body["stats"])
    assert body["status"] == "healthy"
    assert re.fullmatch(r"(\d+h)?(\d+m)?[\d.]+s", body["uptime"])


def test_view_metrics_recipe(service: ServiceProcess, tmp_path: Path) -> None:
    need("curl")
    lines = shell(VIEW_METRICS, service, tmp_path).stdout.splitlines()
    for name in METRICS_SAMPLES:
        assert any(line.startswith(f"# HELP {name} ") for line in lines), name
        (sample,) = [line for line in lines if line.startswith(f"{name} ")]
        assert float(sample.split()[1]) >= 2  # both example batches were counted


def test_stats_is_the_health_stats_object(service: ServiceProcess) -> None:
    stats = json.loads(http(service.health_url("/stats"))[1])
    health = json.loads(http(service.health_url("/health"))[1])
    assert set(stats) == set(health["stats"])
    assert set(json.loads(HEALTH_RESPONSE)["stats"]) <= set(stats)


def test_ready_is_200(service: ServiceProcess) -> None:
    assert http(service.health_url("/ready"))[0] == 200


def test_recent_query_has_the_readme_fields(service: ServiceProcess) -> None:
    path = RECENT_QUERY.split(" ", 1)[1]
    body = json.loads(http(service.health_url(path))[1])
    assert isinstance(body, list) and body
    readme_item = json.loads(RECENT_RESPONSE)[0]
    for item in body:
        assert set(readme_item) <= set(item)
        assert item["ip"] == "8.8.8.8" and item["avg_rtt"] == 15000000


def test_recent_failures_recipe(service: ServiceProcess, tmp_path: Path) -> None:
    need("curl")
    need("jq")
    out = shell(RECENT_FAILURES, service, tmp_path).stdout
    failures = [json.loads(chunk) for chunk in re.split(r"(?m)^(?=\{)", out) if chunk.strip()]
    assert [(f["ip"], f["error"]) for f in failures] == [("192.0.2.9", "timeout")]


def test_backup_recipe_downloads_a_sqlite_file(service: ServiceProcess, tmp_path: Path) -> None:
    need("curl")
    shell(BACKUP, service, tmp_path)
    backup = tmp_path / "backup.db"
    assert backup.read_bytes()[:16] == b"SQLite format 3\x00"
    conn = sqlite3.connect(backup)
    try:
        assert conn.execute("SELECT count(*) FROM ping_results").fetchone()[0] >= 2
        hops = conn.execute("SELECT ip FROM traceroute_hops ORDER BY ttl").fetchall()
        assert ("10.0.0.1",) in hops
    finally:
        conn.close()


def test_manual_rotation_recipe_answers_the_readme_shape(
    service: ServiceProcess, tmp_path: Path
) -> None:
    need("curl")
    body = json.loads(shell(MANUAL_ROTATION, service, tmp_path).stdout)
    readme = json.loads(ROTATE_RESPONSE)
    assert body["status"] == readme["status"]
    assert re.fullmatch(r"results_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d.*\.db", body["file"])


def test_hops_reach_the_input_service_in_the_readme_payload(
    service: ServiceProcess, input_service: ThreadingHTTPServer
) -> None:
    def sent() -> set[str]:
        return {hop for payload in _Hops.received for hop in payload["hops"]}

    wait_until(lambda: {"10.0.0.1", "192.168.1.1", "8.8.8.8"} <= sent(), DEADLINE_S, "hops")
    assert all(set(payload) == {"hops"} for payload in _Hops.received)


def test_ctrl_c_shuts_down_cleanly(tmp_path: Path) -> None:
    running = start_service(tmp_path / "data")
    assert http(running.url("/results"), RESULTS_BODY.encode(), "POST")[0] == 200
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(timeout=DEADLINE_S) == 0
    running.reader.join(timeout=DEADLINE_S)  # type: ignore[union-attr]
    assert running.events("stopped")[0]["total_results"] == 1
