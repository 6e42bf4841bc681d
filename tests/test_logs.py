"""One structured summary line per request, with the context bound by the middleware."""

from __future__ import annotations

from structlog.testing import capture_logs

from tests.conftest import Running, make_result


async def test_one_summary_line_per_request(service: Running) -> None:
    with capture_logs() as logs:
        resp = await service.results.post(
            "/results",
            json=[make_result()] * 2,
            headers={"X-Node-ID": "node-9", "X-Request-ID": "r1"},
        )
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == "r1"
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["method"] == "POST"
    assert line["path"] == "/results"
    assert line["status"] == 200
    assert line["count"] == 2
    assert line["duration_ms"] >= 0
    assert line["log_level"] == "info"


async def test_rejected_request_is_logged_with_its_status(service: Running) -> None:
    with capture_logs() as logs:
        resp = await service.results.post(
            "/results", data=b"{", headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
    assert [(e["path"], e["status"]) for e in logs if e["event"] == "request"] == [
        ("/results", 400)
    ]
