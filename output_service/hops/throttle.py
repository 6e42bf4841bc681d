"""A log line at most once per interval, counting what it held back.

The input service can be down for days and the outbox can overflow on every
commit; one line per event would drown the log, none would hide the problem.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("output_service.hops")


class Throttle:
    """Emit the first event at once, then at most one per `interval_s` (thread-safe)."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held = 0
        self._lock = threading.Lock()

    def warning(self, event: str, **fields: Any) -> None:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        log.warning(event, suppressed=held, **fields)

    def reset(self) -> None:
        """Forget the last emission, so that the next event is logged at once."""
        with self._lock:
            self._last, self._held = None, 0
