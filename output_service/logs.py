"""structlog set-up: JSON lines when stdout is not a terminal, readable lines when it is."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from output_service.config import Config


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """Configure structlog once, from the CLI; tests use structlog.testing.capture_logs()."""
    out = stream if stream is not None else sys.stdout
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if out.isatty() else structlog.processors.JSONRenderer()
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
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


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
