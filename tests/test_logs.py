"""One structured summary line per request, with the context bound by the middleware."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs

from output_service.logs import render_json
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


async def test_probes_and_scrapes_log_at_debug(service: Running) -> None:
    with capture_logs() as logs:
        for path in ("/health", "/ready", "/metrics", "/stats"):
            assert (await service.health.get(path)).status == 200
    levels = {e["path"]: e["log_level"] for e in logs if e["event"] == "request"}
    assert levels == {"/health": "debug", "/ready": "debug", "/metrics": "debug", "/stats": "info"}


async def test_a_refusal_logs_its_reason_and_the_query_string(service: Running) -> None:
    with capture_logs() as logs:
        bad = await service.results.post(
            "/results",
            json=[{"ip": "x", "sent": -1}],
            headers={"Content-Type": "application/json"},
        )
        assert bad.status == 400
        wrong_type = await service.results.post(
            "/results", data=b"[]", headers={"Content-Type": "text/plain"}
        )
        assert wrong_type.status == 415
        assert (await service.health.get("/recent?limit=0")).status == 400
    lines = [e for e in logs if e["event"] == "request"]
    assert lines[0]["reason"] == "invalid batch"
    assert lines[0]["field_errors"][0] == "[0].sent: Expected `int` >= 0"
    assert lines[0]["field_error_count"] == 6
    assert lines[1]["reason"] == "Content-Type must be application/json, got text/plain"
    assert (lines[2]["query"], lines[2]["reason"]) == (
        "limit=0",
        "limit must be an integer from 1 to 1000",
    )


def test_json_lines_keep_keys_and_values_and_survive_bad_text() -> None:
    """The msgspec renderer writes what json.dumps wrote, key for key; text that
    is not valid Unicode (undecodable header bytes arrive as lone surrogates) and
    values JSON has no form for still make one parseable line."""
    event = {"event": "request", "status": 200, "query": None, "duration_ms": 1.5, "n": "é"}
    line = render_json(None, "info", dict(event))
    assert json.loads(line) == event
    assert list(json.loads(line)) == list(event)  # same order
    assert json.loads(render_json(None, "info", {"node": "a\udcff"})) == {"node": "a\udcff"}
    odd = json.loads(render_json(None, "info", {"path": Path("/x")}))
    assert odd == {"path": repr(Path("/x"))}
