"""The health port: the Go README's /health shape, readiness, metrics, stats, recent."""

from __future__ import annotations

import pytest

from output_service import __version__
from output_service.handlers.health import go_duration
from tests.conftest import Running, StartService, make_result


async def test_health_has_the_go_shape(start_service: StartService) -> None:
    now = [1_800_000_000.0]
    service = await start_service(clock=lambda: now[0])
    await service.results.post("/results", json=[make_result(), make_result(error="timeout")])
    now[0] += 3723.5
    resp = await service.health.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert body["uptime"] == "1h2m3.5s"
    stats = body["stats"]
    assert set(stats) == {
        "total_results",
        "successful_pings",
        "failed_pings",
        "hops_discovered",
        "hops_sent",
        "last_result_time",
        "current_db_file",
        "current_db_size",
        "last_rotation",
        "retained_files",
    }
    assert (stats["total_results"], stats["successful_pings"], stats["failed_pings"]) == (2, 1, 1)
    assert stats["last_result_time"] == "2027-01-15T08:00:00.000000Z"
    assert stats["current_db_file"] == service.db_file.name
    assert stats["current_db_size"] >= service.db_file.stat().st_size > 0


async def test_stats_counters_are_rebuilt_from_the_file_on_restart(
    start_service: StartService,
) -> None:
    first = await start_service()
    await first.results.post("/results", json=[make_result(), make_result(error="x")] * 3)
    await first.results.close()
    second = await start_service()
    stats = await (await second.health.get("/stats")).json()
    assert (stats["total_results"], stats["failed_pings"]) == (6, 3)


async def test_ready_is_200_when_the_database_answers(service: Running) -> None:
    resp = await service.health.get("/ready")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready"}


async def test_ready_is_503_when_the_file_is_gone(service: Running) -> None:
    await service.services.storage.close()
    resp = await service.health.get("/ready")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"


async def test_metrics_are_prometheus_text_with_the_prefix(service: Running) -> None:
    await service.results.post("/results", json=[make_result()] * 7)
    resp = await service.health.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    lines = text.splitlines()
    assert "output_service_results_received_total 7.0" in lines
    assert 'output_service_batches_total{outcome="ok"} 1.0' in lines
    assert "output_service_batch_size_results_sum 7.0" in lines
    assert "output_service_ingest_latency_seconds_count 1.0" in lines
    assert "# TYPE output_service_write_queue_results gauge" in lines
    assert any(line.startswith("process_resident_memory_bytes") for line in lines)


async def test_recent_is_newest_first_with_hops(service: Running) -> None:
    await service.results.post("/results", json=[make_result("192.0.2.1", hops=2)])
    await service.results.post(
        "/results", json=[make_result("192.0.2.2")], headers={"X-Node-ID": "n2"}
    )
    resp = await service.health.get("/recent")
    body = await resp.json()
    assert resp.status == 200
    assert [r["ip"] for r in body] == ["192.0.2.2", "192.0.2.1"]
    assert body[0]["node_id"] == "n2"
    assert body[0]["traceroute"] is None
    hops = body[1]["traceroute"]["hops"]
    assert [(h["ttl"], h["ip"]) for h in hops] == [(1, "10.0.0.1"), (2, "10.1.0.1")]


async def test_recent_filters_by_ip_and_limits(service: Running) -> None:
    await service.results.post(
        "/results", json=[make_result("2001:db8::1")] * 3 + [make_result("192.0.2.1")]
    )
    resp = await service.health.get("/recent?ip=2001:DB8:0::1&limit=2")
    body = await resp.json()
    assert len(body) == 2 and resp.headers["X-Result-Count"] == "2"
    assert resp.headers["X-Result-Limit"] == "2"
    assert {r["ip"] for r in body} == {"2001:db8::1"}


async def test_recent_is_the_go_bare_array_with_null_error_when_none(service: Running) -> None:
    await service.results.post(
        "/results", json=[make_result("192.0.2.1"), make_result("192.0.2.2", error="timeout")]
    )
    resp = await service.health.get("/recent?limit=50")
    body = await resp.json()
    assert isinstance(body, list)
    # what the Go README's `jq '.[] | select(.error != null)'` recipe selects
    assert [r["ip"] for r in body if r.get("error") is not None] == ["192.0.2.2"]
    assert [r["error"] for r in body] == ["timeout", None]


async def test_ipv4_mapped_target_is_found_by_its_ipv4_form(service: Running) -> None:
    await service.results.post("/results", json=[make_result("::ffff:192.0.2.200")])
    for query in ("192.0.2.200", "::ffff:192.0.2.200"):
        body = await (await service.health.get("/recent", params={"ip": query})).json()
        assert [r["ip"] for r in body] == ["192.0.2.200"]


async def test_hops_null_comes_back_null_and_empty_comes_back_empty(service: Running) -> None:
    items = []
    for hops in (None, []):
        item = make_result()
        item["traceroute"] = {"method": "icmp", "completed": False, "hops": hops}
        items.append(item)
    item = make_result()
    item["Traceroute"] = {"Method": "icmp", "HOPS": None}  # Go matches keys in any case
    items.append(item)
    assert (await service.results.post("/results", json=items)).status == 200
    body = await (await service.health.get("/recent")).json()
    assert [r["traceroute"]["hops"] for r in reversed(body)] == [None, [], None]


async def test_non_ascii_digits_in_limit_get_400(service: Running) -> None:
    resp = await service.health.get("/recent", params={"limit": "\u00b2"})
    assert resp.status == 400


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=abc", "limit=-1", "ip=not-an-ip", "limit=1e3"]
)
async def test_recent_bad_query_gets_400(service: Running, query: str) -> None:
    resp = await service.health.get(f"/recent?{query}")
    assert resp.status == 400
    assert (await resp.json())["status"] == "error"


async def test_unknown_path_and_method_get_json_errors(service: Running) -> None:
    missing = await service.health.get("/nope")
    assert missing.status == 404
    assert (await missing.json())["status"] == "error"
    wrong = await service.results.get("/results")
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1.25, "1.25s"), (61, "1m1s"), (3600, "1h0m0s"), (90061.5, "25h1m1.5s")],
)
def test_uptime_is_formatted_like_go(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


async def test_metrics_carry_the_go_series_by_their_exact_names(service: Running) -> None:
    await service.results.post("/results", json=[make_result(), make_result(error="timeout")])
    await service.results.post("/results", json=[make_result()])
    text = await (await service.health.get("/metrics")).text()
    lines = text.splitlines()
    for name, value in [
        ("total_results", 3),
        ("successful_pings", 2),
        ("failed_pings", 1),
        ("hops_discovered", 0),
        ("hops_sent", 0),
    ]:
        assert f"output_service_{name} {value:.1f}" in lines, name
    # the conventional counter stays beside the Go name
    assert "output_service_results_received_total 3.0" in lines
    assert "# TYPE output_service_hops_discovered_total counter" in lines


async def test_labelled_counters_have_every_known_series_at_zero(service: Running) -> None:
    text = await (await service.health.get("/metrics")).text()
    lines = set(text.splitlines())
    for sample in [
        'output_service_storage_errors_total{kind="disk_full"} 0.0',
        'output_service_rotations_total{reason="size"} 0.0',
        'output_service_auth_refusals_total{reason="wrong",scope="read"} 0.0',
        'output_service_rejected_requests_total{reason="body_too_large"} 0.0',
        'output_service_dumps_total{outcome="complete"} 0.0',
    ]:
        assert sample in lines, sample
