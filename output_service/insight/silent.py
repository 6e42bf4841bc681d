"""The silent-nodes gauge: refreshed in the background, read at scrape time.

A scrape must not run a query on the event loop, so the gauge reports the
count from the last node listing, and a scrape that finds the listing older
than `refresh_s` starts one refresh in the background for the next scrape.
Silence is judged at scrape time from the cached last-seen times, so a node
that stops sending turns silent on time even between refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from output_service.insight.stats import epoch_of

Listing = Callable[[], Awaitable[list[dict[str, Any]]]]


class SilentNodes:
    def __init__(
        self,
        listing: Listing,
        silent_after_s: float,
        clock: Callable[[], float],
        refresh_s: float = 30.0,
    ) -> None:
        self._listing = listing
        self._silent_after_s = silent_after_s
        self._clock = clock
        self._refresh_s = refresh_s
        self._last_seen: list[str | None] = []
        self._refreshed_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def update(self, nodes: list[dict[str, Any]]) -> None:
        """Take the last-seen times of a fresh listing (from /api/nodes or a refresh)."""
        self._last_seen = [n["last_seen"] for n in nodes]
        self._refreshed_at = self._clock()

    def count(self) -> int:
        """The gauge's value now; starts a background refresh when stale."""
        now = self._clock()
        stale = self._refreshed_at is None or now - self._refreshed_at > self._refresh_s
        if stale and (self._task is None or self._task.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to refresh on
                self._task = asyncio.get_running_loop().create_task(self._refresh())
        return sum(
            1
            for last in self._last_seen
            if last is None or now - epoch_of(last) > self._silent_after_s
        )

    async def _refresh(self) -> None:
        with contextlib.suppress(Exception):  # a busy or failing read keeps the old value
            self.update(await self._listing())
