"""The service as a process: flags, a batch, SIGTERM, rows on disk, exit status."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from output_service.storage.sqlite.file_names import results_files
from tests.conftest import make_result

DEADLINE_S = 20


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `python -m output_service` and wait for its `listening` log line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "output_service", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "listening":
            return proc, event
    proc.wait(DEADLINE_S)
    raise AssertionError(f"service exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m output_service` to completion (for options that end it at once)."""
    return subprocess.run(
        [sys.executable, "-m", "output_service", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def post(port: int, payload: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/results",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as resp:
        return resp.status, json.loads(resp.read())


def test_serves_stores_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    proc, listening = start(
        "--host=127.0.0.1",
        "--port",
        "0",
        "--health-port=0",
        "--db-dir",
        str(db_dir),
        "--input-url",
        "",
        "-v",
    )
    try:
        assert listening["db_dir"] == str(db_dir)
        assert post(listening["results_port"], [make_result(hops=2)] * 3) == (
            200,
            {"status": "ok", "received": 3},
        )
        health_url = f"http://127.0.0.1:{listening['health_port']}/health"
        with urllib.request.urlopen(health_url, timeout=DEADLINE_S) as resp:
            assert json.loads(resp.read())["stats"]["total_results"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, err
    # every line of stdout is one JSON object (msgspec writes them without spaces)
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "stopped" in events
    assert "group committed" in events  # -v adds debug lines
    (file,) = results_files(db_dir)
    conn = sqlite3.connect(file)
    assert conn.execute("SELECT count(*) FROM ping_results").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM traceroute_hops").fetchone() == (6,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_bad_setting_is_one_line_and_status_2(tmp_path: Path) -> None:
    proc = run_cli("--max-size-mb", "-5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "output-service: max_size_mb: must be greater than 0, got -5"


def test_port_in_use_is_one_line_and_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--health-port",
            "0",
            "--db-dir",
            str(tmp_path),
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"output-service: port: cannot listen on 127.0.0.1:{port}"
    )
    assert "Traceback" not in proc.stderr


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("output-service ")
    helptext = run_cli("--help")
    for flag in (
        "--port",
        "--health-port",
        "--input-url",
        "--db-dir",
        "--max-size-mb",
        "--rotation-days",
        "--keep-files",
        "--verbose",
        "--config",
    ):
        assert flag in helptext.stdout


def test_unreadable_state_db_is_one_line_and_status_2(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    (db_dir / "state.db").write_bytes(b"this is not an SQLite file" * 100)
    proc = run_cli(
        "--host", "127.0.0.1", "--port", "0", "--health-port", "0", "--db-dir", str(db_dir)
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("output-service: db_dir: ")
    assert "Traceback" not in proc.stderr


def test_unknown_flag_is_one_line_pointing_to_help() -> None:
    done = run_cli("--prot", "8082")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "output-service: unrecognized arguments: --prot 8082 (see output-service --help)"
    ]


def test_help_names_environment_variables_and_precedence() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "OUTPUT_SERVICE_KEEP_FILES" in text
    assert "defaults < config file < environment < command line" in text
    assert "--no-verbose" in text


def test_start_line_has_every_setting_redacted_and_stop_line_the_waiting_hops(
    tmp_path: Path,
) -> None:
    # the input service is down (nothing listens on the port): hops wait in the outbox.
    # The port stays bound, never listening, for the whole test, so that no other
    # process's server can take it meanwhile and accept the hops.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    proc, listening = start(
        "--host=127.0.0.1",
        "--port=0",
        "--health-port=0",
        f"--db-dir={tmp_path / 'data'}",
        f"--input-url=http://127.0.0.1:{dead_port}/hops",
        "--hops-final-flush-s=0",
        "--admin-token=secret-a,secret-b",
    )
    try:
        settings = listening["settings"]
        assert listening["hop_loop"] is True
        assert settings["admin_token"] == "2 set"
        assert settings["ingest_token"] == settings["read_token"] == ""
        assert settings["keep_files"] == 5 and settings["db_dir"] == str(tmp_path / "data")
        assert set(settings) >= {"max_size_mb", "rotation_days", "synchronous", "input_url"}
        item = make_result(hops=2)
        item["traceroute"]["hops"] = [
            {"ttl": 1, "ip": "198.51.100.1", "rtt": 1},
            {"ttl": 2, "ip": "198.51.100.2", "rtt": 1},
        ]
        assert post(listening["results_port"], [item])[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=DEADLINE_S)
        dead.close()
    assert proc.returncode == 0, err
    assert "secret-a" not in out and "secret-a" not in json.dumps(listening)
    (stopped,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "stopped"]
    assert stopped["hops_waiting"] == 2


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed (Debian package: make)")
    root = Path(__file__).parent.parent
    venv = tmp_path / "venv"
    done = subprocess.run(
        [make, "-n", "run", f"VENV={venv}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    installs = [line for line in done.stdout.splitlines() if "pip install" in line]
    assert any(line.endswith("install --quiet -e .") for line in installs), installs
    assert not any("[dev" in line for line in installs), installs
