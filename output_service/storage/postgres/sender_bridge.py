"""Runs the existing HopSender against the shared PostgreSQL outbox.

The sender drains its outbox through blocking calls made in a worker thread
(`oldest`, `mark_sent`, `dead_letter`: the SQLite state.db's interface). This
bridge answers them by running the PgHopOutbox coroutines on the event loop and
waiting for them in that thread. `oldest` claims hops (SKIP LOCKED, with a
lease) and hands the same claim back until it is settled, so a failed POST is
retried with the same hops rather than claiming more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from output_service.hops.state import Waiting
from output_service.storage.postgres.outbox import PgHopOutbox
from output_service.storage.seam import WaitingHop

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0


class OutboxBridge:
    """The StateDB methods HopSender calls, backed by the shared outbox."""

    def __init__(self, outbox: PgHopOutbox, loop: asyncio.AbstractEventLoop) -> None:
        self._outbox = outbox
        self._loop = loop
        self._claimed: list[WaitingHop] = []

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    def oldest(self, limit: int) -> list[Waiting]:
        if self._claimed:  # a retry: keep the lease while the input service is away
            self._claimed = self._call(self._outbox.renew(self._claimed))
        if not self._claimed:
            self._claimed = self._call(self._outbox.claim(limit))
        return [Waiting(0, h.ip, h.queued_at) for h in self._claimed]

    def mark_sent(self, hops: Sequence[Waiting]) -> int:
        done = self._settle(hops)
        return self._call(self._outbox.delivered(done))

    def dead_letter(self, hops: Sequence[Waiting], status: int, response: str, now: float) -> int:
        done = self._settle(hops)
        return self._call(self._outbox.dead_letter(done, status, response))

    def release_all(self) -> None:
        """Give back what is claimed (on shutdown) so another instance sends it now."""
        if self._claimed:
            self._call(self._outbox.release(self._claimed))
            self._claimed = []

    def _settle(self, hops: Sequence[Waiting]) -> list[WaitingHop]:
        ips = {h.ip for h in hops}
        done = [h for h in self._claimed if h.ip in ips]
        self._claimed = [h for h in self._claimed if h.ip not in ips]
        return done
