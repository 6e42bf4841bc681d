"""The Dockerfile: a pinned base, a fixed user, and a health probe that runs for real."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.test_cli import DEADLINE_S, start

DOCKERFILE = Path(__file__).parent.parent / "Dockerfile"


def instruction(name: str) -> str:
    """The text of one instruction, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def test_base_image_is_pinned_to_a_full_version() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", instruction("FROM"))


def test_user_is_fixed_and_db_dir_comes_from_the_environment() -> None:
    assert instruction("USER") == "10001:10001"
    assert "ENV OUTPUT_SERVICE_DB_DIR=/data" in DOCKERFILE.read_text()
    assert "--db-dir" not in instruction("ENTRYPOINT")


def test_healthcheck_probes_the_configured_health_port(tmp_path: Path) -> None:
    healthcheck = instruction("HEALTHCHECK")
    assert "--start-period=" in healthcheck
    command = shlex.split(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    toml = tmp_path / "config.toml"
    proc, listening = start(
        "--host=127.0.0.1",
        "--port=0",
        "--health-port=0",
        f"--db-dir={tmp_path / 'data'}",
        "--input-url=",
    )
    try:
        toml.write_text(f"health_port = {listening['health_port']}\n")
        env = {**os.environ, "OUTPUT_SERVICE_CONFIG": str(toml)}
        probe = [sys.executable, *command[1:]]
        assert subprocess.run(probe, env=env, timeout=DEADLINE_S).returncode == 0
        # pointed elsewhere (the results port has no /ready) the probe fails
        other = listening["results_port"]
        env_down = {**env, "OUTPUT_SERVICE_HEALTH_PORT": str(other)}
        done = subprocess.run(probe, env=env_down, timeout=DEADLINE_S, capture_output=True)
        assert done.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=DEADLINE_S)
