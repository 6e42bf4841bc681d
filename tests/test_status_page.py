"""The status page in a real browser: Debian's headless Chromium driven by Playwright
against the real service as a process, with seeded results.

Checks what a person would: the page loads with no console error and no request off
127.0.0.1, the targets are listed worst loss first, a target's chart has drawn
paths, and a silent node is marked. Screenshots of each page go to
$OUTPUT_SERVICE_SCREENSHOTS (default: the test's temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.exercised_service import request
from tests.service_process import ServiceProcess, start_service, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SILENT_AFTER_S = 4
# Taken out of the environment when the tests are collected: the service refuses
# OUTPUT_SERVICE_* variables that are not settings, and every service process of
# the session inherits this environment.
SCREENSHOTS = os.environ.pop("OUTPUT_SERVICE_SCREENSHOTS", None)
# (target, packet loss of each of its results): mean loss 50, 25, 10, 0
TARGETS = {
    "198.51.100.7": [75.0, 25.0] * 9,
    "198.51.100.3": [50.0, 0.0] * 9,
    "198.51.100.9": [20.0, 0.0] * 9,
    "198.51.100.1": [0.0, 0.0] * 9,
}
PATH_A = ["10.0.0.1", "203.0.113.1", None]
PATH_B = ["10.0.0.1", "203.0.113.2", None]


def _result(ip: str, loss: float, at: datetime, i: int, path: list[str | None]) -> dict[str, Any]:
    received = round(4 * (1 - loss / 100))
    hops = [
        {"ttl": n + 1, "ip": hop, "rtt": 1_000_000 * (n + 1)}
        if hop
        else {"ttl": n + 1, "timeout": True}
        for n, hop in enumerate(path)
    ]
    return {
        "ip": ip,
        "sent": 4,
        "received": received,
        "packet_loss": loss,
        "avg_rtt": 0 if received == 0 else 10_000_000 + 1_500_000 * (i % 5),
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "error": "" if received else "timeout",
        "traceroute": {"method": "icmp", "completed": True, "hops": hops},
    }


def _post(service: ServiceProcess, node: str, results: list[dict[str, Any]]) -> None:
    status, body = request(
        service.url("/results"),
        json.dumps(results).encode(),
        {"Content-Type": "application/json", "X-Node-ID": node},
    )
    assert status == 200, body


def _nodes(service: ServiceProcess) -> dict[str | None, dict[str, Any]]:
    status, body = request(service.health_url("/api/nodes"))
    assert status == 200, body
    data = json.loads(body)
    rows = data["nodes"] if isinstance(data, dict) else data
    return {row["node_id"]: row for row in rows}


def seed(service: ServiceProcess) -> None:
    """node-b sends once and goes silent; node-a then sends every target's series
    (one result every 20 minutes over the last 6 hours; the first target's route
    changes half way)."""
    now = datetime.now(UTC)
    _post(service, "node-b", [_result("198.51.100.1", 0.0, now - timedelta(hours=1), 0, PATH_A)])
    wait_until(
        lambda: _nodes(service).get("node-b", {}).get("silent") is True,
        SILENT_AFTER_S + 30,
        "node-b silent",
    )
    for ip, losses in TARGETS.items():
        start = now - timedelta(hours=6)
        results = [
            _result(
                ip,
                loss,
                start + timedelta(minutes=20 * i),
                i,
                PATH_A if i < len(losses) // 2 else PATH_B,
            )
            for i, loss in enumerate(losses)
        ]
        _post(service, "node-a", results)


def expected_order() -> list[str]:
    """Worst mean loss first, computed here from the seeded results (node-b's one
    result for 198.51.100.1 has no loss)."""
    means = {ip: sum(losses) / len(losses) for ip, losses in TARGETS.items()}
    return sorted(means, key=lambda ip: -means[ip])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("status-page")
    service = start_service(
        tmp / "data", env={"OUTPUT_SERVICE_NODE_SILENT_AFTER_S": str(SILENT_AFTER_S)}
    )
    try:
        if request(service.health_url("/api/targets"))[0] == 404:
            pytest.skip("GET /api/targets answers 404: the query API is not merged yet")
        seed(service)
        yield service
    finally:
        if service.proc.poll() is None:
            assert service.terminate() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium not found: install the Debian package chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
        )
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(SCREENSHOTS or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Watched:
    """A page whose console errors, page errors and request hosts are recorded."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "request", lambda r: self.hosts.add(urllib.parse.urlsplit(r.url).hostname or "")
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    page = Watched(browser)
    yield page
    page.close()


def test_overview_lists_targets_worst_first_and_marks_the_silent_node(
    seeded: ServiceProcess, watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    page.goto(seeded.health_url("/"))
    page.wait_for_selector("body[data-loaded=overview]", timeout=30_000)
    shown = page.locator("#targets tr[data-ip]").evaluate_all("rows => rows.map(r => r.dataset.ip)")
    assert shown == expected_order()
    assert page.locator('#nodes tr[data-node="node-b"]').get_attribute("class") == "silent"
    assert page.locator('#nodes tr[data-node="node-b"] .badge.silent').inner_text() == "silent"
    assert page.locator("#service .card").count() >= 7
    assert page.locator("#files tr").count() >= 2  # header and the live file
    # sparklines for the rows on screen
    # (locator waits, not wait_for_function: a polled predicate string is run by
    # eval in the page, which the page's CSP forbids, and that failed once)
    page.locator("#targets svg.spark path").nth(3).wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(screenshots / "status-overview.png"), full_page=True)
    assert watched.errors == []
    assert watched.hosts == {"127.0.0.1"}


def test_target_page_draws_the_smokeping_chart_and_the_route_change(
    seeded: ServiceProcess, watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    worst = expected_order()[0]
    page.goto(seeded.health_url(f"/#/target/{worst}"))
    page.wait_for_selector("body[data-loaded=target]", timeout=30_000)
    page.locator(".ranges button", has_text="24h").click()
    page.locator(".ranges button.on", has_text="24h").wait_for(timeout=30_000)
    medians = page.locator("#smoke path.median")
    assert medians.count() >= 2
    assert page.locator("#smoke path.smoke").count() >= 1
    # half the results lose packets: some segments are not the no-loss green
    colours = set(medians.evaluate_all("ps => ps.map(p => p.getAttribute('stroke'))"))
    assert len(colours) >= 2
    assert page.locator("#smoke rect.lossbar").count() >= 1
    assert page.locator("#paths tr").count() == 3  # header and two paths
    assert page.locator("#changes tr").count() == 2  # header and the one change
    assert page.locator("#smoke line.change").count() == 1
    page.screenshot(path=str(screenshots / "status-target.png"), full_page=True)
    assert watched.errors == []
    assert watched.hosts == {"127.0.0.1"}
