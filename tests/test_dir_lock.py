"""One owner per data directory, and a failed start that touches nothing.

Both run the service as a real process: a second instance on the same db_dir
exits 2 naming the directory and the holder's PID, leaving every file byte for
byte as it was, while the first instance keeps answering; a start on a busy
port leaves db_dir exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import make_result
from tests.service_process import start_service

DEADLINE_S = 30


def snapshot(db_dir: Path) -> dict[str, tuple[int, str]]:
    """Every path under db_dir with its size and content hash (directories: -1).

    A `-shm` file counts by size only: it is SQLite's shared memory of the
    instance that is running, whose own reads (the read upkeep, a gauge) rewrite
    its read marks at any moment; it holds no data."""
    found: dict[str, tuple[int, str]] = {}
    for path in sorted(db_dir.rglob("*")):
        rel = str(path.relative_to(db_dir))
        if path.is_dir():
            found[rel] = (-1, "")
        elif path.name.endswith("-shm"):
            found[rel] = (path.stat().st_size, "")
        else:
            data = path.read_bytes()
            found[rel] = (len(data), hashlib.sha256(data).hexdigest())
    return found


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "output_service", "--host=127.0.0.1", "--input-url=", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def post(url: str, ip: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps([make_result(ip)]).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
        return int(response.status)


def test_second_instance_on_the_same_db_dir_exits_2_touching_nothing(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    first = start_service(db_dir)
    try:
        assert post(first.url("/results"), "192.0.2.1") == 200
        before = snapshot(db_dir)
        second = run_cli("--port=0", "--health-port=0", f"--db-dir={db_dir}")
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert str(db_dir) in lines[0]
        assert f"PID {first.proc.pid}" in lines[0]
        assert snapshot(db_dir) == before
        with urllib.request.urlopen(first.health_url("/ready"), timeout=DEADLINE_S) as ready:
            assert ready.status == 200
        assert post(first.url("/results"), "192.0.2.2") == 200
    finally:
        assert first.terminate() == 0, first.stderr()


def test_lock_file_holds_the_pid_and_is_free_again_after_a_kill(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    first = start_service(db_dir)
    assert (db_dir / ".lock").read_text().strip() == str(first.proc.pid)
    first.kill9()  # the kernel releases the lock of a dead process
    again = start_service(db_dir)
    try:
        assert (db_dir / ".lock").read_text().strip() == str(again.proc.pid)
    finally:
        assert again.terminate() == 0, again.stderr()


def test_busy_port_leaves_db_dir_exactly_as_it_was(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    first = start_service(db_dir)  # leaves a results file, state and a lock file behind
    assert post(first.url("/results"), "192.0.2.1") == 200
    assert first.terminate() == 0, first.stderr()
    before = snapshot(db_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(f"--port={port}", "--health-port=0", f"--db-dir={db_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"output-service: port: cannot listen on 127.0.0.1:{port}"
    )
    assert snapshot(db_dir) == before


def test_busy_port_creates_no_db_dir(tmp_path: Path) -> None:
    db_dir = tmp_path / "never"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("--port=0", f"--health-port={port}", f"--db-dir={db_dir}")
    assert proc.returncode == 2
    assert "health_port: cannot listen" in proc.stderr
    assert not db_dir.exists()
