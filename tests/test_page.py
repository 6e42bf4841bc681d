"""The status page's handlers without a browser: files from the whitelist only, a
strict CSP, and /api/status's figures against what was sent."""

from __future__ import annotations

from typing import Any

from tests.conftest import Running, make_result


async def test_index_and_static_files_carry_a_strict_csp(service: Running) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ):
        reply = await service.health.get(path)
        assert reply.status == 200, path
        assert reply.headers["Content-Type"] == f"{kind}; charset=utf-8"
        assert reply.headers["Content-Security-Policy"].startswith("default-src 'self';")
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
    page = await (await service.health.get("/")).text()
    assert 'src="static/app.js"' in page and 'href="static/style.css"' in page
    assert "http://" not in page and "https://" not in page


async def test_only_whitelisted_static_files(service: Running) -> None:
    for name in ("index.html", "..%2F__init__.py", "nope.js"):
        reply = await service.health.get(f"/static/{name}")
        assert reply.status == 404, name
        assert (await reply.json())["status"] == "error"
    assert (await service.health.get("/static/../app.py")).status == 404


async def test_static_files_make_no_request_off_the_service(service: Running) -> None:
    for name in ("app.js", "style.css"):
        text = await (await service.health.get(f"/static/{name}")).text()
        # the only absolute URL is the SVG namespace, which is a name, not a request
        assert text.replace("http://www.w3.org/2000/svg", "").count("://") == 0, name
        assert "@import" not in text and "url(" not in text


async def test_status_reports_ingest_files_and_hops_off(service: Running) -> None:
    body = [make_result(f"192.0.2.{i}") for i in range(7)]
    assert (await service.results.post("/results", json=body)).status == 200
    assert (await service.results.post("/results", json=body[:3])).status == 200
    reply = await service.health.get("/api/status")
    assert reply.status == 200
    status: dict[str, Any] = await reply.json()
    assert status["ready"] is True
    ingest = status["ingest"]
    assert ingest["results_total"] == 10
    assert ingest["queue_results"] == 0
    assert ingest["queue_max_results"] == service.services.config.queue_max_results
    assert ingest["window_s"] > 0
    # both figures are rounded to 3 decimals
    assert abs(ingest["results_per_s"] * ingest["window_s"] - 10) < 0.2
    assert set(ingest["latency_seconds"]) == {"p50", "p90", "p99"}
    assert all(v is not None and v > 0 for v in ingest["latency_seconds"].values())
    assert [f["name"] for f in status["files"]] == [service.db_file.name]
    assert status["current_db_file"] == service.db_file.name
    assert status["hops"] is None
    # within the first minute every call measures from the start
    again = (await (await service.health.get("/api/status")).json())["ingest"]
    assert abs(again["results_per_s"] * again["window_s"] - 10) < 0.2
