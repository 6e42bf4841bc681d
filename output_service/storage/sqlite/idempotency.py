"""Remembered Idempotency-Key replies, so a retried batch is stored once.

The authority is the `batches` table (a UNIQUE key, in the same transaction as
the results); this bounded, expiring map only lets a retry be answered without
touching the writer. It is refilled from the database at start-up, so keys
survive restarts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Remembered:
    count: int
    body_hash: str | None
    expires_at: float


class IdempotencyCache:
    """Key -> original reply, oldest first, bounded in size and age."""

    def __init__(self, window_s: float, max_keys: int) -> None:
        self.window_s = window_s
        self._max_keys = max_keys
        self._entries: OrderedDict[str, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> Remembered | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def remember(self, key: str, count: int, body_hash: str | None, received_at: float) -> None:
        self._entries[key] = Remembered(count, body_hash, received_at + self.window_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)

    def expire(self, now: float) -> None:
        """Drop expired keys (entries are in arrival order, so stop at the first live one)."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            del self._entries[key]
