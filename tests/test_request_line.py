"""The request line written without the bound logger is the line log.info writes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from output_service.handlers import middleware
from output_service.logs import configure_logging


class _Stream(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def out() -> Iterator[io.BytesIO]:
    raw = io.BytesIO()
    saved = structlog.get_config()
    stream = _Stream(raw, encoding="utf-8")  # held: collecting it would close `raw`
    configure_logging(False, stream)
    try:
        yield raw
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()


def _fields() -> dict[str, object]:
    return {
        "method": "POST",
        "path": "/results",
        "query": None,
        "status": 200,
        "duration_ms": 1.5,
        "count": 1,
    }


def test_same_keys_values_and_order_as_log_info(
    out: io.BytesIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    structlog.contextvars.bind_contextvars(request_id="ab12", remote="127.0.0.1", node=None)
    # a fresh logger: middleware.log is cached by whichever configuration came first
    structlog.get_logger("output_service.http").info("request", **_fields())
    monkeypatch.setattr(middleware, "log", None)  # the line must not go through it
    middleware._info_line(_fields())
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(first) == list(second)
    assert first.pop("timestamp") <= second.pop("timestamp")
    assert first == second
    assert second["request_id"] == "ab12" and second["level"] == "info"


def test_captured_logs_still_see_the_line(out: io.BytesIO) -> None:
    with structlog.testing.capture_logs() as captured:
        middleware._info_line(_fields())
    assert [(e["event"], e["log_level"]) for e in captured] == [("request", "info")]
    assert out.getvalue() == b""
