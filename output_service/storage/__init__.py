"""The storage seam: the only part of the service that knows SQLite.

Handlers see `Storage` and its plain-data answers; the interface (submit a
batch, stats, recent results, readiness, close) is narrow so that another
backend could stand behind it later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.models import Batch
from output_service.storage import reader
from output_service.storage.files import file_name_for, results_files, size_on_disk
from output_service.storage.idempotency import IdempotencyCache
from output_service.storage.results_file import BatchMeta, BatchOutcome, ResultsFile
from output_service.storage.writer import (
    BeforeCommit,
    QueueFullError,
    StorageError,
    Writer,
    WriterClosedError,
)

__all__ = [
    "IdempotencyConflictError",
    "QueueFullError",
    "Storage",
    "StorageError",
    "SubmitResult",
    "WriterClosedError",
]

Clock = Callable[[], float]
log = structlog.get_logger("output_service.storage")


class IdempotencyConflictError(Exception):
    """The Idempotency-Key was used before for a different body."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    count: int
    duplicate: bool = False


def utc_text(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class Storage:
    """Results files in `config.db_dir`, written by one Writer, read per query."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        clock: Clock = time.time,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self._config = config
        self._before_commit = before_commit
        self._metrics = metrics
        self._clock = clock
        self._writer: Writer | None = None
        self._idempotency = IdempotencyCache(
            config.idempotency_window_hours * 3600, config.idempotency_max_keys
        )
        self._in_flight: dict[str, asyncio.Future[BatchOutcome]] = {}
        self.total_results = 0
        self.failed_results = 0
        self.last_result_time: float | None = None
        self.last_rotation: float | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Continue the newest results file (or start one), load counters and keys."""
        db_dir = self._config.db_dir
        await asyncio.to_thread(db_dir.mkdir, parents=True, exist_ok=True)
        existing = await asyncio.to_thread(results_files, db_dir)
        path = existing[-1] if existing else db_dir / file_name_for(self._clock(), set())
        config = self._config
        file = await asyncio.to_thread(
            ResultsFile.open,
            path,
            synchronous=config.synchronous,
            cache_size_mb=config.cache_size_mb,
            wal_autocheckpoint=config.wal_autocheckpoint,
        )
        writer = Writer(
            file,
            max_group_results=config.commit_max_results,
            max_delay_s=config.commit_max_delay_ms / 1000,
            queue_max_results=config.queue_max_results,
            on_commit=self._committed,
            on_group=self._metrics.observe_commit,
            before_commit=self._before_commit,
            on_error=self._write_failed,
        )
        counts = await writer.run_in_thread(file.counts)
        self.total_results, self.failed_results = counts.results, counts.failed
        since = utc_text(self._clock() - self._idempotency.window_s)
        for key, count, body_hash, received_at in await writer.run_in_thread(
            lambda: file.recent_idempotency_keys(since)
        ):
            moment = datetime.fromisoformat(received_at).timestamp()
            self._idempotency.remember(key, count, body_hash, moment)
        writer.start()
        self._writer = writer
        self._metrics.queue_depth_fn(lambda: writer.queued_results)

    async def close(self) -> None:
        """Commit everything queued and close the files."""
        if self._writer is not None:
            await self._writer.close()

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        return self._writer

    @property
    def current_file(self) -> Path:
        return self.writer.file.path

    # -- ingest ------------------------------------------------------------

    async def submit(
        self,
        batch: Batch,
        *,
        remote: str | None = None,
        node_id: str | None = None,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
    ) -> SubmitResult:
        """Store a batch; returns only after it has committed (or raises)."""
        now = self._clock()
        if idempotency_key is not None:
            earlier = await self._earlier_reply(idempotency_key, body_hash, now)
            if earlier is not None:
                return earlier
        if not batch.results:
            return SubmitResult(0)
        meta = BatchMeta(utc_text(now), remote, node_id, idempotency_key, body_hash)
        future = self.writer.submit(batch, meta)
        if idempotency_key is not None:
            self._in_flight[idempotency_key] = future
            future.add_done_callback(lambda _: self._in_flight.pop(idempotency_key, None))
        outcome = await future
        if outcome.duplicate:
            _check_same_body(outcome.body_hash, body_hash)
        return SubmitResult(outcome.count, outcome.duplicate)

    async def _earlier_reply(
        self, key: str, body_hash: str | None, now: float
    ) -> SubmitResult | None:
        remembered = self._idempotency.get(key, now)
        if remembered is not None:
            _check_same_body(remembered.body_hash, body_hash)
            return SubmitResult(remembered.count, duplicate=True)
        in_flight = self._in_flight.get(key)
        if in_flight is None:
            return None
        outcome = await asyncio.shield(in_flight)
        _check_same_body(outcome.body_hash, body_hash)
        return SubmitResult(outcome.count, duplicate=True)

    def _committed(self, done: Sequence[tuple[BatchMeta, BatchOutcome]]) -> None:
        now = self._clock()
        stored = 0
        for meta, outcome in done:
            if meta.idempotency_key is not None:
                self._idempotency.remember(
                    meta.idempotency_key, outcome.count, outcome.body_hash, now
                )
            if not outcome.duplicate:
                stored += outcome.count
                self.failed_results += outcome.failed
        self.total_results += stored
        if stored:
            self.last_result_time = now
        self._metrics.results_stored.inc(stored)
        self._idempotency.expire(now)

    def _write_failed(self, error: StorageError) -> None:
        self._metrics.storage_errors.labels(kind=error.kind).inc()
        if error.kind == "file_removed":
            log.error("results file was deleted underneath; restored it with every commit")
        else:
            log.error(
                "write failed, nothing of the group stored", kind=error.kind, error=str(error)
            )

    # -- reads ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The `stats` object of /health and /stats (Go service's field names)."""
        path = self.current_file
        return {
            "total_results": self.total_results,
            "successful_pings": self.total_results - self.failed_results,
            "failed_pings": self.failed_results,
            "hops_discovered": 0,
            "hops_sent": 0,
            "last_result_time": _maybe_text(self.last_result_time),
            "current_db_file": path.name,
            "current_db_size": size_on_disk(path),
            "last_rotation": _maybe_text(self.last_rotation),
        }

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        return await reader.recent_results(self.current_file, limit, ip)

    async def ready(self) -> bool:
        """The writer runs, its last transaction did not fail, and the current file
        answers a query."""
        if self._writer is None or not self._writer.alive or self._writer.failing is not None:
            return False
        try:
            return await reader.answers(self.current_file)
        except Exception:
            return False


def _check_same_body(stored: str | None, given: str | None) -> None:
    if stored is not None and given is not None and stored != given:
        raise IdempotencyConflictError("Idempotency-Key was already used for a different batch")


def _maybe_text(moment: float | None) -> str | None:
    return None if moment is None else utc_text(moment)
