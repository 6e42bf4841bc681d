"""structlog set-up: JSON lines when stdout is not a terminal, readable lines when it is."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
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
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


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
