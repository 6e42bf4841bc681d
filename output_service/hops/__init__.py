"""The hop feedback loop: stored traceroute hops go back to the input service.

Two halves share state.db (in db_dir, never rotated) and a few counters: the
`HopRecorder` runs on a thread of its own while the storage writer inserts a
group, and queues the group's new hops durably before the group commits; the
`HopSender` runs on the event loop and drains the queue through
`SqliteHopOutbox` (the seam's `HopOutbox`). `HopFeedback` builds both from the
config and gives the app one object to open, start, stop and close, in that
order around storage:

    open() -> storage.open() -> start_sender() ... stop_sender() -> storage.close() -> close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from output_service.config import Config
from output_service.hops.outbox import SqliteHopOutbox
from output_service.hops.recorder import HopCounts, HopRecorder
from output_service.hops.sender import HopSender, SenderSettings
from output_service.hops.state import STATE_FILE, StateDB
from output_service.metrics import Metrics
from output_service.models import Batch
from output_service.storage.sqlite.results_file import BatchMeta

__all__ = ["HopFeedback"]


class HopFeedback:
    """Everything of the hop loop that the app starts and stops."""

    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], float]) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self.counts = HopCounts()
        self.recorder: HopRecorder | None = None
        self.sender: HopSender | None = None
        self._writer_state: StateDB | None = None
        self._thread: ThreadPoolExecutor | None = None  # where the recorder runs
        self._sender_state: StateDB | None = None

    @property
    def path(self) -> Path:
        return self._config.db_dir / STATE_FILE

    async def open(self) -> None:
        """Open state.db for the hop recorder and load the totals (before storage opens)."""
        cfg = self._config
        await asyncio.to_thread(cfg.db_dir.mkdir, parents=True, exist_ok=True)
        state = await asyncio.to_thread(self._open_state)
        self._writer_state = state
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hop-recorder")
        depth, totals = await asyncio.to_thread(lambda: (state.depth(), state.counters()))
        counts = self.counts
        counts.depth = depth
        counts.discovered, counts.sent = totals["discovered"], totals["sent"]
        counts.dropped, counts.dead_lettered = totals["dropped"], totals["dead_lettered"]
        loop = asyncio.get_running_loop()
        self.recorder = HopRecorder(
            state,
            counts,
            self._metrics,
            self._clock,
            exclude_private=cfg.hops_exclude_private,
            resend_after_s=cfg.hop_resend_after_hours * 3600,
            cache_size=cfg.hops_cache_size,
            outbox_max=cfg.hops_outbox_max,
            on_queued=lambda depth: self._queued(loop, depth),
        )
        self._metrics.hops_outbox_depth.set_function(lambda: counts.depth)
        self._metrics.hops_oldest_waiting_age.set_function(self._oldest_age)

    def _open_state(self) -> StateDB:
        cfg = self._config
        return StateDB.open(
            self.path, synchronous=cfg.synchronous, wal_autocheckpoint=cfg.wal_autocheckpoint
        )

    def before_commit(self, items: Sequence[tuple[Batch, BatchMeta]]) -> Future[None]:
        """The storage writer's hook: queue the group's hops on the hop thread.

        The writer inserts the group's rows meanwhile and commits them only when
        this future is done, so hops are still durable before their batch is
        acknowledged (the order the recorder's docstring explains), but the two
        files' work overlaps: the hook was 40% of the writer thread's time, most
        of it state.db's B-tree writes and fsync, which hold no GIL."""
        if self.recorder is None or self._thread is None:
            raise RuntimeError("hop feedback is not open")
        return self._thread.submit(self.recorder, items)

    async def start_sender(self) -> None:
        cfg = self._config
        state = await asyncio.to_thread(self._open_state)
        self._sender_state = state
        settings = SenderSettings(
            url=cfg.input_url,
            batch_size=cfg.hops_batch_size,
            flush_interval_s=cfg.hops_flush_interval_s,
            backoff_base_s=cfg.hops_backoff_base_s,
            backoff_max_s=cfg.hops_backoff_max_s,
            timeout_s=cfg.hops_send_timeout_s,
        )
        outbox = SqliteHopOutbox(state, self._clock)
        self.sender = HopSender(outbox, self.counts, self._metrics, settings, self._clock)
        self.sender.start()

    def begin_shutdown(self) -> None:
        """SIGTERM: start the final flush now, while the ports drain; it may take
        hops_final_flush_s but never more than shutdown_grace_s, so the process
        exits within the grace (plus closing) even if the input service stalls."""
        if self.sender is not None:
            cfg = self._config
            self.sender.begin_stop(min(cfg.hops_final_flush_s, cfg.shutdown_grace_s))

    async def stop_sender(self) -> None:
        """A short final flush (hops_final_flush_s), then stop; the rest waits in state.db."""
        if self.sender is not None:
            await self.sender.stop(self._config.hops_final_flush_s)
            self.sender = None
        if self._sender_state is not None:
            await asyncio.to_thread(self._sender_state.close)
            self._sender_state = None

    async def close(self) -> None:
        """Close the writer's connection (after storage has closed: no hook runs any more)."""
        if self._thread is not None:
            await asyncio.to_thread(self._thread.shutdown)
            self._thread = None
        if self._writer_state is not None:
            await asyncio.to_thread(self._writer_state.close)
            self._writer_state = None

    def stats(self) -> dict[str, int]:
        """The hop fields of /health and /stats: totals kept in state.db."""
        return {"hops_discovered": self.counts.discovered, "hops_sent": self.counts.sent}

    def _queued(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        sender = self.sender
        if sender is not None and depth >= self._config.hops_batch_size:
            loop.call_soon_threadsafe(sender.wake)

    def _oldest_age(self) -> float:
        oldest = self.counts.oldest_queued_at
        return 0.0 if oldest is None or self.counts.depth == 0 else max(0.0, self._clock() - oldest)
