"""The service as a real process (`python -m output_service`), for crash, shutdown and
timeout tests: started on ports 0, found through its JSON `listening` log line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.load_client import RESULTS_PER_BATCH, marker_ip

START_TIMEOUT_S = 30.0
CLIENT = Path(__file__).with_name("load_client.py")


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[str]
    results_port: int = 0
    health_port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr_path: Path | None = None
    reader: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.results_port}{path}"

    def health_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._join()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (bounded wait)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # say where it hung, then do not leave it running
            self.kill9()
            last = [line.get("event") for line in list(self.lines)[-15:]]
            raise AssertionError(
                f"no exit {timeout:.0f} s after SIGTERM; last events {last}; "
                f"stderr: {self.stderr()[-2000:]}"
            ) from None
        self._join()
        return status

    def _join(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=30)

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == name]


def start_service(
    db_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> ServiceProcess:
    """Start the service on free loopback ports; return once it listens."""
    stderr_path = db_dir.parent / f"stderr-{os.urandom(4).hex()}.txt"
    cmd = [
        sys.executable,
        "-m",
        "output_service",
        "--port=0",
        "--health-port=0",
        "--host=127.0.0.1",
        f"--db-dir={db_dir}",
        "--input-url=",
        *args,
    ]
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
    service = ServiceProcess(proc, stderr_path=stderr_path)
    listening = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                service.lines.append(line)
                if line.get("event") == "listening":
                    service.results_port = int(line["results_port"])
                    service.health_port = int(line["health_port"])
                    listening.set()
        listening.set()  # stdout closed: the process ended

    service.reader = threading.Thread(target=read_stdout, daemon=True)
    service.reader.start()
    if not listening.wait(START_TIMEOUT_S) or not service.results_port:
        service.kill9()
        raise RuntimeError(f"service did not start: {service.stderr()}")
    return service


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition with a bounded deadline (not a sleep used as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_for_acks(
    ack_file: Path, count: int, client: subprocess.Popen[str], timeout: float = 60
) -> None:
    """Until the client has `count` acknowledged batches (or has stopped by itself)."""
    wait_until(
        lambda: len(acked(ack_file)) >= count or client.poll() is not None,
        timeout,
        f"{count} acknowledged batches",
    )


def acked(path: Path) -> set[tuple[int, int]]:
    """(worker, batch) pairs the client saw a 200 for; only whole lines count."""
    if not path.exists():
        return set()
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the last piece may be a line being written
    return {(int(w), int(b)) for w, b in (line.split() for line in lines)}


def stored_ips(db_dir: Path) -> Counter[str]:
    """Every ping_results.ip in every database file, after an integrity check of each."""
    found: Counter[str] = Counter()
    files = sorted(db_dir.glob("*.db"))
    assert files, "no database file"
    for path in files:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path.name
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "ping_results" in tables:
                found.update(ip for (ip,) in conn.execute("SELECT ip FROM ping_results"))
        finally:
            conn.close()
    return found


def run_client(port: int, ack_file: Path, worker_base: int, rotate: bool) -> subprocess.Popen[str]:
    args = [sys.executable, str(CLIENT), str(port), str(ack_file), str(worker_base)]
    return subprocess.Popen(
        [*args, "--rotate"] if rotate else args,
        stderr=subprocess.PIPE,
        text=True,
        cwd=CLIENT.parent.parent,
    )


def lost_or_duplicated(
    acks: set[tuple[int, int]], ips: Counter[str]
) -> tuple[list[tuple[int, int]], list[str]]:
    """Acknowledged batches not stored exactly once, and results stored more than once."""
    duplicated = sorted(ip for ip, n in ips.items() if n > 1)
    lost = [
        (worker, batch)
        for worker, batch in sorted(acks)
        if any(ips[marker_ip(worker, batch, i)] != 1 for i in range(RESULTS_PER_BATCH))
    ]
    return lost, duplicated


def stop_leftovers(service: ServiceProcess, client: subprocess.Popen[str]) -> None:
    """After a test, whatever happened: kill the service and the client if still running."""
    if service.proc.poll() is None:
        service.kill9()
    if client.poll() is None:
        client.kill()
        client.wait(timeout=30)
