"""PostgresStore: the Store of the seam on a database shared by many instances.

Each instance is stateless: the truth (results, idempotency keys, the hop
outbox, the totals) is in the database. Start-up migrates (once, under an
advisory lock), creates partitions ahead and drops expired ones; a maintenance
task repeats that every minute. When the database is lost, ingest answers 503
with Retry-After (every group fails fast and nothing is acknowledged),
readiness is false, and the pool reconnects by itself once the server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from output_service.config import Config
from output_service.hops.recorder import HopCounts
from output_service.hops.sender import HopSender, SenderSettings
from output_service.metrics import Metrics
from output_service.storage.postgres import StoreOpenError, schema
from output_service.storage.postgres.connection import create_pool, describe, is_unavailable
from output_service.storage.postgres.outbox import PgHopOutbox
from output_service.storage.postgres.reads import PgReads
from output_service.storage.postgres.writer import Outcome, PgWriter, WriterSettings
from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import (
    Archive,
    IdempotencyConflict,
    Readiness,
    StoreError,
    Submission,
    SubmitResult,
    utc_text,
)

log = structlog.get_logger("output_service.storage.postgres")

MAINTENANCE_INTERVAL_S = 60.0
STATS_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
# Ingest is busy while this instance's writer has batches queued, or a batch was stored
# (by any instance: the database's newest batch, read each second with the totals)
# within this window. While it is, reads yield to it (`ReadGate`, as on SQLite).
INGEST_BUSY_WINDOW_S = 1.0
_TOTALS = (
    "SELECT coalesce(sum(result_count), 0) AS total, coalesce(sum(failed_count), 0) AS failed,"
    " max(received_at) AS last,"
    " extract(epoch FROM now() - max(received_at))::float8 AS idle_s,"
    " (SELECT count(*) FROM hops_seen) AS discovered,"
    " (SELECT value FROM counters WHERE name = 'hops_sent') AS sent,"
    " (SELECT count(*) FROM hop_outbox) AS depth"
    " FROM batches"
)


class PostgresStore:
    archive: Archive | None = None  # no files: pg_dump is the backup

    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], float] = time.time):
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._writer: PgWriter | None = None
        self._lost: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._totals: dict[str, Any] = {}
        self._partitions = 0
        self.hop_counts = HopCounts()
        self.outbox: PgHopOutbox | None = None
        self._sender: HopSender | None = None
        self._last_commit = -INGEST_BUSY_WINDOW_S  # monotonic, of this instance's last
        self._shared_last_commit = -INGEST_BUSY_WINDOW_S  # and of any instance's (estimated)
        gate = ReadGate(
            config.max_concurrent_reads,
            config.read_query_timeout_s,
            ingest_busy=self.ingest_busy,
            share_while_ingesting=config.read_share_while_ingesting,
        )
        self.reads = PgReads(lambda: self.pool, gate)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        cfg = self._config
        try:
            self._pool = await create_pool(cfg.database_url, cfg.pg_pool_size, 30.0)
            async with self._pool.acquire() as conn:
                applied = await schema.migrate(conn)
            await self._maintain()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, schema.SchemaError) as exc:
            if self._pool is not None:
                self._pool.terminate()
            raise StoreOpenError(describe(exc, cfg.database_url)) from None
        if applied:
            log.info("database migrated", versions=applied)
        self._writer = PgWriter(
            self._pool,
            WriterSettings(
                max_group_results=cfg.commit_max_results,
                queue_max_results=cfg.queue_max_results,
                hops=bool(cfg.input_url),
                exclude_private=cfg.hops_exclude_private,
                resend_after_s=cfg.hop_resend_after_hours * 3600,
            ),
            on_commit=self._committed,
            on_lost=self._database_lost,
            ensure_partitions=self._maintain,
        )
        self._writer.start()
        writer = self._writer
        self._metrics.queue_depth_fn(lambda: writer.queued_results)
        self._metrics.hops_outbox_depth.set_function(lambda: self.hop_counts.depth)
        await self._refresh_totals()
        self._tasks = [
            asyncio.create_task(self._every(MAINTENANCE_INTERVAL_S, self._maintain)),
            asyncio.create_task(self._every(STATS_INTERVAL_S, self._refresh_totals)),
        ]
        if cfg.input_url:
            self._start_sender()

    async def close(self) -> None:
        if self._sender is not None:  # gives back what it holds: another instance sends it
            await self._sender.stop(self._config.hops_final_flush_s)
        if self._writer is not None:
            await self._writer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5.0)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._pool.terminate()

    def _start_sender(self) -> None:
        cfg = self._config
        self.outbox = PgHopOutbox(self.pool, cfg.pg_hop_lease_s)
        settings = SenderSettings(
            url=cfg.input_url,
            batch_size=cfg.hops_batch_size,
            flush_interval_s=cfg.hops_flush_interval_s,
            backoff_base_s=cfg.hops_backoff_base_s,
            backoff_max_s=cfg.hops_backoff_max_s,
            timeout_s=cfg.hops_send_timeout_s,
        )
        self._sender = HopSender(self.outbox, self.hop_counts, self._metrics, settings, self._clock)
        self._sender.start()

    async def _every(self, seconds: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                if is_unavailable(exc):
                    self._database_lost(exc)
                else:
                    log.error("database maintenance failed", error=describe(exc, ""))

    async def _maintain(self) -> None:
        """Partitions ahead of time, expired ones dropped (whichever instance runs first
        does the work; the others find it done)."""
        cfg = self._config
        now = dt.datetime.now(dt.UTC)
        async with self.pool.acquire() as conn:
            created = await schema.ensure_partitions(
                conn, now, cfg.pg_partition_days, cfg.pg_partitions_ahead
            )
            dropped = await schema.drop_expired(conn, now, cfg.retention_days)
            sealed = await schema.seal_partitions(conn, now)
            self._partitions = len(await schema.partitions(conn))
        if created or dropped or sealed:
            log.info("partitions maintained", created=created, dropped=dropped, sealed=sealed)
        if dropped:
            self._metrics.deleted_files.inc(len(dropped) // len(schema.PARTITIONED))

    async def _refresh_totals(self) -> None:
        row = await self.pool.fetchrow(_TOTALS, timeout=PROBE_TIMEOUT_S * 2)
        if row is None:
            return
        self._totals = dict(row)
        if row["idle_s"] is not None:  # the newest batch of any instance, on this clock
            self._shared_last_commit = time.monotonic() - max(0.0, row["idle_s"])
        counts = self.hop_counts
        counts.discovered, counts.sent, counts.depth = row["discovered"], row["sent"], row["depth"]
        if self._lost is not None:
            self._database_back()

    # -- the database coming and going ---------------------------------------------

    def _database_lost(self, exc: BaseException) -> None:
        if self._lost is None:
            self._metrics.storage_errors.labels(kind="unavailable").inc()
            log.error(
                "database unavailable; ingest answers 503 until it is back",
                error=describe(exc, self._config.database_url),
            )
        self._lost = describe(exc, self._config.database_url)

    def _database_back(self) -> None:
        log.info("database is back")
        self._lost = None

    async def readiness(self) -> Readiness:
        if self._writer is None or self._pool is None:
            return Readiness(False, "storage is not open")
        try:
            await self._pool.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
        except Exception as exc:
            self._database_lost(exc)
            return Readiness(False, "database unreachable")
        if self._lost is not None:
            self._database_back()
        return Readiness(True)

    # -- ingest --------------------------------------------------------------------

    @property
    def queue_full(self) -> bool:
        return self._writer is not None and self._writer.full

    async def submit(self, submission: Submission) -> SubmitResult:
        if self._writer is None:
            raise StoreError("storage is not open", kind="closed")
        if not submission.batch.results:
            return SubmitResult(0)
        future = self._writer.submit(submission)
        # shielded: a client gone mid-commit must not cancel the outcome
        outcome: Outcome = await asyncio.shield(future)
        if outcome.duplicate:
            given, stored = submission.body_hash, outcome.body_hash
            if given is not None and stored is not None and given != stored:
                raise IdempotencyConflict("Idempotency-Key was already used for a different batch")
        return SubmitResult(outcome.count, outcome.duplicate)

    def ingest_busy(self) -> bool:
        """Ingest is working on this database: batches wait for this instance's writer,
        or one was stored within INGEST_BUSY_WINDOW_S, here or (as of the last
        totals refresh) on any instance. While it is, reads yield to it."""
        writer = self._writer
        if writer is not None and writer.queued_results > 0:
            return True
        last = max(self._last_commit, self._shared_last_commit)
        return time.monotonic() - last < INGEST_BUSY_WINDOW_S

    def _committed(self, stored: int, failed: int, hops_queued: int) -> None:
        self._last_commit = time.monotonic()
        self._metrics.results_stored.inc(stored)
        if hops_queued:
            self._metrics.hops_discovered.inc(hops_queued)
            self.hop_counts.depth += hops_queued
            if self._sender is not None and self.hop_counts.depth >= self._config.hops_batch_size:
                self._sender.wake()
        if self._lost is not None:
            self._database_back()

    def stats(self) -> dict[str, Any]:
        """Totals over every instance (refreshed each second from the database)."""
        t = self._totals
        total, failed = int(t.get("total", 0)), int(t.get("failed", 0))
        last = t.get("last")
        return {
            "total_results": total,
            "successful_pings": total - failed,
            "failed_pings": failed,
            "hops_discovered": int(t.get("discovered", 0)),
            "hops_sent": int(t.get("sent") or 0),
            "last_result_time": None if last is None else utc_text(last.timestamp()),
            "current_db_file": None,
            "current_db_size": 0,
            "last_rotation": None,
            "retained_files": 0,
            "storage": "postgres",
            "partitions": self._partitions,
            "database_available": self._lost is None,
        }
