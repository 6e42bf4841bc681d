"""deploy/: compose.yaml and the Grafana provisioning parse, everything they mount
exists, and every metric a dashboard or an alert rule names is in the live /metrics
of the real service (after it was exercised, so labelled series exist)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.exercised_service import exercised_service, metric_sample_names, scrape

DEPLOY = Path(__file__).parent.parent / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
# Series Prometheus makes itself, not the service
PROMETHEUS_MADE = {"up"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "le",
}  # fmt: skip


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_parses_and_every_mounted_file_exists() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    assert set(compose["services"]) == {"output-service", "prometheus", "grafana"}
    named = set(compose["volumes"])
    mounts = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
                mounts += 1
            else:
                assert source in named, f"{name} uses volume {source}, not declared"
        for env_file in [service["env_file"]] if "env_file" in service else []:
            assert (DEPLOY / f"{env_file}.example").exists()
    assert mounts == 4
    build = compose["services"]["output-service"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()


def test_env_example_names_the_tokens() -> None:
    keys = {
        line.split("=", 1)[0]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {
        "OUTPUT_SERVICE_INGEST_TOKEN",
        "OUTPUT_SERVICE_ADMIN_TOKEN",
        "OUTPUT_SERVICE_READ_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    } <= keys


def test_grafana_provisioning_parses_and_dashboards_use_provisioned_sources() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = _yaml(provisioning / "datasources" / "datasources.yml")["datasources"]
    uids = {s["uid"] for s in sources}
    providers = _yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert [d.name for d in DASHBOARDS] == ["measurements.json", "service.json"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        used = {p["datasource"]["uid"] for p in dashboard["panels"]}
        used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
        assert used <= uids, path.name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name


def _promql(text: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers,
    grouping clauses and strings that are not functions or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name not in PROMQL_WORDS and not re.fullmatch(r"\d+e\d+", name):
            names.add(name)
    return names


def used_metric_names() -> dict[str, set[str]]:
    """metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in _promql(target.get("expr", "")):
                    used.setdefault(name, set()).add(f"{path.name}: {panel['title']}")
        for var in dashboard.get("templating", {}).get("list", []):
            query = var.get("query", {})
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            for name in re.findall(r"label_values\((\w+)", text):
                used.setdefault(name, set()).add(f"{path.name}: ${var['name']}")
    rules = _yaml(DEPLOY / "prometheus" / "alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in _promql(rule["expr"]):
                used.setdefault(name, set()).add(f"alerts.yml: {rule['alert']}")
    return used


def test_promql_names_are_extracted() -> None:
    found = _promql(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y(z)"}[5m])))'
        " / on (instance) b_total offset 5m and $var"
    )
    assert found == {"a_bucket", "b_total"}
    used = used_metric_names()
    assert "output_service_ingest_latency_seconds_bucket" in used
    assert "output_service_hops_outbox_depth" in used
    assert len(used) >= 25


@pytest.fixture(scope="module")
def live_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    with exercised_service(tmp_path_factory.mktemp("metrics")) as service:
        yield metric_sample_names(scrape(service))


def test_every_metric_in_dashboards_and_alerts_is_exported(live_names: set[str]) -> None:
    missing = {
        name: sorted(where)
        for name, where in used_metric_names().items()
        if name not in live_names and name not in PROMETHEUS_MADE
    }
    assert missing == {}
