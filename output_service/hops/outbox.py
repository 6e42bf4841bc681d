"""state.db's outbox as the seam's `HopOutbox`, the interface the sender drains.

One instance owns a data directory (`storage.dir_lock`), so a claim here is
only a note of which rows the sender holds: rows leave the outbox only by
`delivered` or `dead_letter`, and `release` just forgets the note (the rows
were never taken out). Each call runs on a worker thread: state.db is SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from output_service.hops.state import StateDB, Waiting, listing
from output_service.storage.seam import WaitingHop


class SqliteHopOutbox:
    def __init__(self, state: StateDB, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        self._claimed: dict[str, Waiting] = {}  # ip -> its outbox row, while held

    async def claim(self, limit: int) -> list[WaitingHop]:
        rows = await asyncio.to_thread(self._state.oldest, limit)
        self._claimed.update((w.ip, w) for w in rows)
        return [WaitingHop(w.ip, w.queued_at) for w in rows]

    async def delivered(self, hops: Sequence[WaitingHop]) -> int:
        return await asyncio.to_thread(self._state.mark_sent, self._settle(hops))

    async def dead_letter(self, hops: Sequence[WaitingHop], status: int, response: str) -> int:
        rows, now = self._settle(hops), self._clock()
        return await asyncio.to_thread(self._state.dead_letter, rows, status, response, now)

    async def release(self, hops: Sequence[WaitingHop]) -> None:
        self._settle(hops)

    async def depth(self) -> int:
        return await asyncio.to_thread(self._state.depth)

    async def listing(self, limit: int, offset: int) -> dict[str, Any]:
        return await asyncio.to_thread(listing, self._state.path, limit, offset)

    def _settle(self, hops: Sequence[WaitingHop]) -> list[Waiting]:
        """The rows of `hops` this outbox handed out, no longer held."""
        return [w for h in hops if (w := self._claimed.pop(h.ip, None)) is not None]
