"""structlog set-up: JSON lines when stdout is not a terminal, readable lines when it is."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


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
