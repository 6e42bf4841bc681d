"""deploy/prometheus: the scrape config and alert rules pass promtool's checks and
unit tests, and the live /metrics of the real service passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exercised_service import exercised_service, scrape

PROMETHEUS_DIR = Path(__file__).parent.parent / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not found: install the Debian package prometheus")
    return tool


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR,
        timeout=120,
        check=False,
    )


def test_rules_pass_check_rules(promtool: str) -> None:
    done = _run(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 13 rules found" in done.stdout


def test_scrape_config_passes_check_config(promtool: str) -> None:
    done = _run(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    done = _run(promtool, "test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 13
    untested = [a for a in alerts if f"alertname: {a}\n" not in tests]
    assert untested == []


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with exercised_service(tmp_path_factory.mktemp("prometheus")) as service:
        yield scrape(service)


def test_live_metrics_pass_check_metrics(promtool: str, live_metrics: str) -> None:
    done = _run(promtool, "check", "metrics", stdin=live_metrics)
    # promtool prints lint problems (names, units, help) and exits 1 on any
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == ""
    assert "output_service_hop_send_attempts_total{" in live_metrics
