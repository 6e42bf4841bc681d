"""systemd: the notify protocol against a real datagram socket, with the service as a
real process, and the unit file checked by `systemd-analyze`."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from output_service.sdnotify import Notifier
from tests.conftest import make_result
from tests.service_process import start_service

UNIT = Path(__file__).parent.parent / "deploy" / "systemd" / "output-service.service"
INSTALLED_EXEC = "ExecStart=/opt/output-service/bin/output-service"
RECV_DEADLINE_S = 30.0


class NotifySocket:
    """The systemd side: a bound AF_UNIX datagram socket that collects messages."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[dict[str, str]] = []

    def next(self, deadline_s: float = RECV_DEADLINE_S) -> dict[str, str]:
        """The next datagram as KEY=value pairs; fails after the deadline."""
        self.sock.settimeout(deadline_s)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no notification; so far: {self.messages}") from None
        message = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append(message)
        return message

    def until(self, key: str) -> dict[str, str]:
        deadline = time.monotonic() + RECV_DEADLINE_S
        while time.monotonic() < deadline:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message
        raise AssertionError(f"no {key}; so far: {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    receiver = NotifySocket(str(path))
    yield str(path), receiver
    receiver.close()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return int(reply.status)


def _post_one(url: str) -> int:
    body = json.dumps([make_result()]).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


def test_ready_watchdog_and_stopping_from_the_real_service(
    tmp_path: Path, notify_socket: tuple[str, NotifySocket]
) -> None:
    address, receiver = notify_socket
    # WATCHDOG_USEC 0.2 s: the service pings every 0.1 s
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    service = start_service(tmp_path / "data", env=env)
    try:
        ready = receiver.next()
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(service.proc.pid)
        assert f":{service.results_port}" in ready["STATUS"]
        assert f":{service.health_port}" in ready["STATUS"]
        # READY means both ports answer and storage takes batches
        assert _get(service.health_url("/ready")) == 200
        assert _post_one(service.url("/results")) == 200
        pings = [receiver.next() for _ in range(3)]
        assert pings == [{"WATCHDOG": "1"}] * 3
        assert service.terminate() == 0
        stopping = receiver.until("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert all("READY" not in m for m in receiver.messages[1:])
    finally:
        if service.proc.poll() is None:
            service.kill9()


def test_without_watchdog_usec_only_ready_and_stopping(
    tmp_path: Path, notify_socket: tuple[str, NotifySocket]
) -> None:
    address, receiver = notify_socket
    service = start_service(tmp_path / "data", env={"NOTIFY_SOCKET": address})
    try:
        assert receiver.next()["READY"] == "1"
        assert service.terminate() == 0
        assert receiver.next()["STOPPING"] == "1"
        receiver.sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            receiver.sock.recv(4096)  # nothing else was sent: no WATCHDOG=1
    finally:
        if service.proc.poll() is None:
            service.kill9()


def test_abstract_socket_address() -> None:
    name = f"output-service-test-{os.getpid()}-{os.urandom(4).hex()}"
    receiver = NotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert receiver.next() == {"READY": "1", "STATUS": "up", "MAINPID": str(os.getpid())}
    finally:
        receiver.close()


def test_watchdog_interval_is_half_the_timeout_and_only_for_its_process() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env, pid=42).watchdog_s == 15.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_s == 15.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "43"}, pid=42).watchdog_s is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "0"}, pid=42).watchdog_s is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "soon"}, pid=42).watchdog_s is None


def test_no_socket_or_a_dead_one_is_not_an_error(tmp_path: Path) -> None:
    assert not Notifier.from_environ({}).enabled
    assert Notifier.from_environ({}).ready("up") is False
    gone = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.ready("up") is False
    assert gone.stopping() is False


# -- the unit file ----------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_asks_for_notify_a_dynamic_user_and_hardening() -> None:
    settings = _unit_settings()
    expected = {
        "Type": ["notify"],
        "DynamicUser": ["yes"],
        "StateDirectory": ["output-service"],
        "Environment": ["OUTPUT_SERVICE_DB_DIR=/var/lib/output-service"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
    }
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert "WatchdogSec" in settings


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script: verify
    insists that the program exists, and /opt/output-service is where the README
    installs it, not where the tests run."""
    script = Path(sys.executable).parent / "output-service"
    if not script.exists():
        pytest.skip("the output-service console script is not installed next to python")
    text = UNIT.read_text()
    assert text.count(INSTALLED_EXEC) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_EXEC, f"ExecStart={script}"))
    return copy


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found: install the Debian package systemd")
    return tool


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _verifiable_copy(tmp_path)
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_systemd_analyze_security_rates_it_ok(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _verifiable_copy(tmp_path)
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in done.stderr:
        pytest.skip("this systemd-analyze has no offline security check (systemd < 250)")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    # systemd's scale: 0 (locked down) to 10 (unprotected); below 2 it calls "OK"
    assert float(found.group(1)) < 2.0, done.stdout
    assert found.group(2) == "OK"
