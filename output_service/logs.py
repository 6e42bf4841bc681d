"""structlog set-up: JSON lines when stdout is not a terminal, readable lines when it is."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

import msgspec
import structlog

from output_service.config import Config


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """Configure structlog once, from the CLI; tests use structlog.testing.capture_logs().

    Off a terminal each line is JSON encoded by msgspec and written as bytes: the
    same keys in the same order as json.dumps, without the spaces after `:` and
    `,`, in a third less time (one request line per POST; BENCHMARKS.md)."""
    out = stream if stream is not None else sys.stdout
    tty = out.isatty()
    renderer: structlog.types.Processor = structlog.dev.ConsoleRenderer() if tty else render_json
    factory: Any = (
        structlog.PrintLoggerFactory(out) if tty else structlog.BytesLoggerFactory(out.buffer)
    )
    structlog.configure(
        processors=[add_request_level_time, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


# The request being served (request_id, remote, node), set once per request by the
# front middleware and merged into every line logged while it is served: one
# ContextVar.set per request, where structlog.contextvars cleared and bound three
# variables (and merge_contextvars walked a copy of the whole context per line).
REQUEST_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("request_context", default=None)
_UTC = datetime.UTC
_format_exc_info = structlog.processors.format_exc_info


def bind_request(request_id: str, remote: str | None, node: str | None) -> None:
    """Every line logged from here on in this task (one request) carries these."""
    REQUEST_CONTEXT.set({"request_id": request_id, "remote": remote, "node": node})


def add_request_level_time(
    logger: Any, method_name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """structlog's merge_contextvars, add_log_level, TimeStamper(fmt="iso", utc=True)
    and format_exc_info in one processor (one call per line instead of four):
    the request's fields (a key the call passed itself wins, as with
    merge_contextvars), `level`, `timestamp` and, when there is one, the
    formatted exception, in that order."""
    request = REQUEST_CONTEXT.get()
    if request is not None:
        for key, value in request.items():
            event_dict.setdefault(key, value)
    if method_name == "warn":
        method_name = "warning"
    elif method_name == "exception":
        method_name = "error"
    event_dict["level"] = method_name
    event_dict["timestamp"] = datetime.datetime.now(_UTC).isoformat().replace("+00:00", "Z")
    if "exc_info" in event_dict:
        return _format_exc_info(logger, method_name, event_dict)
    return event_dict


_encoder = msgspec.json.Encoder(enc_hook=repr)


def render_json(_logger: Any, _method: str, event: structlog.types.EventDict) -> bytes:
    """One JSON line; what msgspec cannot write goes through json.dumps, as before:
    text that is no valid Unicode (a header's undecodable bytes arrive as lone
    surrogates) comes out escaped, and any other value as its repr."""
    try:
        return _encoder.encode(event)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(event, default=repr).encode()


def effective_settings(config: Config) -> dict[str, Any]:
    """Every setting as the service runs with it, for the start-up line: what an
    operator needs to tell why it behaves as it does. A token shows only how many
    are set (`"2 set"`), never its text."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("secret"):
            count = len([t for t in str(value).split(",") if t.strip()])
            value = f"{count} set" if count else ""
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out
