"""The writer-side half of the hop loop: extract, deduplicate, queue.

`HopRecorder` is the storage writer's `before_commit` hook (run on a thread of
its own while the writer inserts the group's rows). For each group it
extracts the sendable hops, drops those queued within the resend window (first
in a bounded in-memory LRU, then in state.db's seen table), and writes the rest
to the outbox, committing state.db *before* the results transaction commits. A
crash between the two commits can only leave hops of a batch that was never
acknowledged (real hops all the same; the client's retry is deduplicated);
the reverse order could acknowledge a batch whose hops are lost. If this hook
raises, the group fails and its clients get a 503, so it swallows nothing and
relies on input that `decode_batch` has already validated.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from output_service.hops.extract import sendable_hops
from output_service.hops.state import StateDB
from output_service.hops.throttle import Throttle
from output_service.metrics import Metrics
from output_service.models import Batch
from output_service.storage.sqlite.results_file import BatchMeta


class SeenCache:
    """Recently queued hops and when they were queued, at most `capacity` of them.

    Least recently used entries go first; a miss costs one indexed lookup in
    state.db, so the cache is an accelerator and never the truth.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: str) -> float | None:
        queued_at = self._entries.get(ip)
        if queued_at is not None:
            self._entries.move_to_end(ip)
        return queued_at

    def put(self, ip: str, queued_at: float) -> None:
        self._entries[ip] = queued_at
        self._entries.move_to_end(ip)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, ip: str) -> None:
        self._entries.pop(ip, None)


@dataclass
class HopCounts:
    """Totals shared by the recorder thread and the sender (guarded by `lock`).

    `discovered`, `sent`, `dropped` and `dead_lettered` mirror the counters
    kept in state.db, so /health reports totals across restarts without
    touching SQLite on the event loop.
    """

    depth: int = 0
    discovered: int = 0
    sent: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    oldest_queued_at: float | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()


class HopRecorder:
    """The before_commit hook; every method but `open` runs on the hop thread, one
    group at a time (the writer waits for each before its next group)."""

    def __init__(
        self,
        state: StateDB,
        counts: HopCounts,
        metrics: Metrics,
        clock: Callable[[], float],
        *,
        exclude_private: bool,
        resend_after_s: float,
        cache_size: int,
        outbox_max: int,
        on_queued: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self._state = state
        self._counts = counts
        self._metrics = metrics
        self._clock = clock
        self._exclude_private = exclude_private
        self._resend_after = resend_after_s
        self.cache = SeenCache(cache_size)
        self._outbox_max = outbox_max
        self._on_queued = on_queued
        self._drop_warning = Throttle(60.0, clock)

    def __call__(self, items: Sequence[tuple[Batch, BatchMeta]]) -> None:
        self.record([batch for batch, _ in items])

    def record(self, batches: Sequence[Batch]) -> None:
        """Queue the new hops of `batches`; durable when this returns."""
        now = self._clock()
        since = now - self._resend_after  # queued after this: still within the window
        cached = self.cache.get

        def fresh(ip: str) -> bool:
            queued_at = cached(ip)
            return queued_at is not None and queued_at > since

        hops, already = sendable_hops(batches, self._exclude_private, fresh)
        if not hops:
            if already:
                self._metrics.hops_deduplicated.inc(already)
            return
        unknown: list[str] = []  # not in the cache, or in it but due again
        for ip in hops:
            queued_at = cached(ip)
            if queued_at is None or queued_at <= since:
                unknown.append(ip)
        known = 0
        if unknown:
            recent = self._state.seen_at(unknown, after=since)
            for ip, queued_at in recent.items():
                self.cache.put(ip, queued_at)
            known = len(recent)
            new = [ip for ip in unknown if ip not in recent]
            if new:
                with self._counts.lock:
                    depth = self._counts.depth
                added, dropped = self._state.queue(new, now, self._outbox_max, depth)
                self._queued(new, added, dropped, now)
        self._metrics.hops_deduplicated.inc(already + len(hops) - len(unknown) + known)

    def _queued(self, new: list[str], added: int, dropped: list[str], now: float) -> None:
        """Bring memory in line with what state.db has just committed."""
        for ip in new:
            self.cache.put(ip, now)
        for ip in dropped:
            self.cache.forget(ip)
        counts = self._counts
        with counts.lock:
            counts.depth += added - len(dropped)
            counts.discovered += len(new)
            counts.dropped += len(dropped)
            depth = counts.depth
        self._metrics.hops_discovered.inc(len(new))
        if dropped:
            self._metrics.hops_dropped.inc(len(dropped))
            self._drop_warning.warning(
                "hop outbox full, dropped the oldest hops",
                dropped=len(dropped),
                outbox_max=self._outbox_max,
            )
        self._on_queued(depth)
