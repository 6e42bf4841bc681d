"""SqliteStore: the SQLite backend behind the seam (`storage.seam.Store`).

The service keeps `keep_files` results files in `db_dir`; the newest is
written by one Writer, all of them are read. `/stats` totals cover the
retained files (what `/recent` and `/dump` can still show): counted once per
file at start-up, kept up to date in memory on every commit, and reduced when
retention deletes a file. What only a file backend can do (rotate, list,
dump) is `archive` (`SqliteArchive`); the reads are `reads`.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.models import Batch
from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import (
    IdempotencyConflict,
    Readiness,
    StoreError,
    Submission,
    SubmitResult,
    utc_text,
)
from output_service.storage.sqlite import inventory, reader
from output_service.storage.sqlite.archive import SqliteArchive
from output_service.storage.sqlite.catalog import Catalog
from output_service.storage.sqlite.file_names import results_files, size_on_disk
from output_service.storage.sqlite.idempotency import IdempotencyCache
from output_service.storage.sqlite.key_index import KeyIndex
from output_service.storage.sqlite.reads.prerender import SideFiles
from output_service.storage.sqlite.reads.reads import SqliteReads
from output_service.storage.sqlite.reads.upkeep import ReadUpkeep
from output_service.storage.sqlite.registry import FileEntry, FileRegistry
from output_service.storage.sqlite.results_file import BatchMeta, BatchOutcome
from output_service.storage.sqlite.rotator import Rotator
from output_service.storage.sqlite.schema import SchemaError
from output_service.storage.sqlite.writer import BeforeCommit, Writer

# What opening the storage can fail with: I/O, or a file SQLite cannot
# read (the CLI turns these into one line and exit status 2).
OPEN_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SchemaError,
    sqlite3.DatabaseError,
    inventory.StartupFault,
)

Clock = Callable[[], float]
KEYS_FILE = "state.db"  # shared with the hop loop; never rotated
# Ingest counts as busy this long after a batch is stored: between one client's
# batches the queue is empty for a moment, and reads should not rush in then.
INGEST_BUSY_WINDOW_S = 1.0
log = structlog.get_logger("output_service.storage")


class StoreReads(SqliteReads):
    """The query API's reads over every retained file (newest first), and
    /recent from the file registry (which holds a file against retention while
    it is read), both through the read bound."""

    def __init__(
        self, db_dir: Path, gate: ReadGate, catalog: Catalog, sides: SideFiles | None
    ) -> None:
        super().__init__(lambda: results_files(db_dir)[::-1], gate, sides)
        self._recent_gate = gate
        self._catalog = catalog

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        return await self._recent_gate.bound(lambda: self._catalog.recent(limit, ip))


class SqliteStore:
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
        self._keys: KeyIndex | None = None
        self._idempotency = IdempotencyCache(
            config.idempotency_window_hours * 3600, config.idempotency_max_keys
        )
        self._in_flight: dict[str, asyncio.Future[BatchOutcome]] = {}
        self._registry = FileRegistry(on_deleted=self._deleted)
        self._rotator = Rotator(config, metrics, self._registry, clock)
        self._catalog = Catalog(config, metrics, self._registry)
        self.archive = SqliteArchive(self._rotator, self._catalog, lambda: self.writer)
        self._last_commit = -INGEST_BUSY_WINDOW_S  # monotonic, of the last stored batch
        self.read_gate = ReadGate(
            config.max_concurrent_reads,
            config.read_query_timeout_s,
            ingest_busy=self.ingest_busy,
            share_while_ingesting=config.read_share_while_ingesting,
        )
        sides = SideFiles(config.db_dir) if config.prerender_exports else None
        self.reads = StoreReads(config.db_dir, self.read_gate, self._catalog, sides)
        # warm summaries and pre-rendered export items; the app starts and stops it
        self.read_upkeep = ReadUpkeep(self.reads, lambda: results_files(config.db_dir)[::-1], sides)
        self.last_result_time: float | None = None
        self._received = UtcTextCache()

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Check every file in `db_dir`, continue the newest (or start one), load
        counters and idempotency keys from all retained files, apply retention."""
        config = self._config
        writer = Writer(
            max_group_results=config.commit_max_results,
            max_delay_s=config.commit_max_delay_ms / 1000,
            queue_max_results=config.queue_max_results,
            on_commit=self._committed,
            on_group=self._metrics.observe_commit,
            before_commit=self._before_commit,
            on_error=self._write_failed,
            after_group=lambda: self._rotator.after_group(writer),
            keys_before=self._keys_known,
            keys_after=self._keys_committed,
        )
        try:
            await asyncio.to_thread(inventory.prepare_dir, config.db_dir)
            now = self._clock()
            found = await self._catalog.load(
                self._idempotency, now - self._idempotency.window_s, now
            )
            self.last_result_time = self._catalog.last_received  # /stats after a restart
            keys = await asyncio.to_thread(KeyIndex.open, config.db_dir / KEYS_FILE)
            self._keys = keys
            # a crash between a results commit and its keys' commit: the file has them
            await asyncio.to_thread(keys.record, found)
            await writer.open(await self._rotator.open_current())
        except (OSError, sqlite3.Error) as exc:  # a full disk is never a corrupt file
            await writer.close()
            raise inventory.startup_fault(config.db_dir, exc) from None
        except BaseException:
            await writer.close()
            raise
        self._writer = writer
        await self._rotator.finish_sealed()
        self._registry.retire(config.keep_files)
        self._metrics.queue_depth_fn(lambda: writer.queued_results)
        self._metrics.current_file_bytes.set_function(lambda: size_on_disk(self.current_file))
        self._metrics.retained_files.set_function(lambda: len(self._registry))

    def ingest_busy(self) -> bool:
        """Ingest is working: batches wait for the writer, or one was stored within
        INGEST_BUSY_WINDOW_S. While it is, reads yield to it (the read gate)."""
        writer = self._writer
        if writer is not None and writer.queued_results > 0:
            return True
        return time.monotonic() - self._last_commit < INGEST_BUSY_WINDOW_S

    async def close(self) -> None:
        """Commit everything queued and close the files."""
        if self._writer is not None:
            await self._writer.close()
        await self._rotator.close()
        if self._keys is not None:
            await asyncio.to_thread(self._keys.close)
            self._keys = None
        self._catalog.dump_slots.close()

    # -- the durable key index (writer thread) -------------------------------

    def _keys_since(self) -> str:
        return utc_text(self._clock() - self._idempotency.window_s)

    def _keys_known(self, items: Sequence[tuple[Batch, BatchMeta]]) -> tuple[dict[str, Any], str]:
        """Keys of the group the durable index has from earlier batches (memory
        may have forgotten them: it only caches), and the window's start."""
        since = self._keys_since()
        wanted = [m.idempotency_key for _, m in items if m.idempotency_key is not None]
        if not wanted or self._keys is None:
            return {}, since
        return self._keys.lookup(wanted, since), since

    def _keys_committed(
        self, items: Sequence[tuple[Batch, BatchMeta]], outcomes: Sequence[BatchOutcome]
    ) -> None:
        """After the results commit: the new keys go into the durable index. A
        failure here is logged, not raised: the batches are stored and their keys
        are in the results file, which start-up reads back into the index."""
        rows = [
            (m.idempotency_key, o.count, o.body_hash, m.received_at)
            for (_, m), o in zip(items, outcomes, strict=True)
            if m.idempotency_key is not None and not o.duplicate
        ]
        if not rows or self._keys is None:
            return
        try:
            self._keys.record(rows, expire_before=self._keys_since())
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot record idempotency keys in state.db", error=str(exc))

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        return self._writer

    @property
    def queue_full(self) -> bool:
        return self._writer is not None and self._writer.full

    @property
    def current_file(self) -> Path:
        return self.writer.path

    @property
    def total_results(self) -> int:
        return self._registry.totals()[0]

    @property
    def last_rotation(self) -> float | None:
        return self._rotator.last_rotation

    def _deleted(self, entry: FileEntry) -> None:
        self._metrics.deleted_files.inc()

    # -- ingest ------------------------------------------------------------

    async def submit(self, submission: Submission) -> SubmitResult:
        """Store a batch; returns only after it has committed (or raises)."""
        now = self._clock()
        key, body_hash = submission.idempotency_key, submission.body_hash
        if key is None:
            if not submission.batch.results:
                return SubmitResult(0)  # nothing to store, no key to remember
            meta = BatchMeta(self._received.text(now), submission.remote, submission.node_id)
            # Nobody else waits for a key-less batch's outcome, so it is awaited
            # without a shield (which costs a second future and a loop iteration
            # per request; BENCHMARKS.md): a cancelled waiter cancels only its own
            # future, which the writer then leaves alone, and the batch is still
            # committed with its group, as with the shield.
            outcome = await self.writer.submit(submission.batch, meta)
            return SubmitResult(outcome.count, outcome.duplicate)
        earlier = await self._earlier_reply(key, body_hash, now)
        if earlier is not None:
            return earlier
        meta = BatchMeta(
            self._received.text(now), submission.remote, submission.node_id, key, body_hash
        )
        future = self.writer.submit(submission.batch, meta)
        self._in_flight[key] = future
        future.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # shielded: a client that goes away (its handler cancelled) must not cancel
        # the outcome that concurrent retries with the same key are waiting for
        outcome = await asyncio.shield(future)
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
        current = self._registry.current  # rotation swaps files only between groups
        for meta, outcome in done:
            if meta.idempotency_key is not None:
                self._idempotency.remember(
                    meta.idempotency_key, outcome.count, outcome.body_hash, now
                )
            if not outcome.duplicate:
                stored += outcome.count
                current.failed += outcome.failed
        current.results += stored
        if stored:
            self.last_result_time = now
            self._last_commit = time.monotonic()
        self._metrics.results_stored.inc(stored)
        log.debug("group committed", batches=len(done), results=stored, file=current.path.name)
        self._idempotency.expire(now)

    def _write_failed(self, error: StoreError) -> None:
        self._metrics.storage_errors.labels(kind=error.kind).inc()
        if error.kind == "file_removed":
            log.error("results file was deleted underneath; restored it with every commit")
        else:
            log.error(
                "write failed, nothing of the group stored", kind=error.kind, error=str(error)
            )

    # -- state -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The `stats` object of /health and /stats (Go service's field names)."""
        path = self.current_file
        total, failed = self._registry.totals()
        return {
            "total_results": total,
            "successful_pings": total - failed,
            "failed_pings": failed,
            "hops_discovered": 0,
            "hops_sent": 0,
            "last_result_time": _maybe_text(self.last_result_time),
            "current_db_file": path.name,
            "current_db_size": size_on_disk(path),
            "last_rotation": _maybe_text(self.last_rotation),
            "retained_files": len(self._registry),
        }

    async def readiness(self) -> Readiness:
        """Ready: the writer runs, its last transaction did not fail, and the
        current file answers a query. Degraded (still ready): a rotation that
        keeps failing."""
        failing = self._rotator.failing
        degraded = (failing,) if failing is not None else ()
        writer = self._writer
        if writer is None or not writer.alive:
            return Readiness(False, "the writer is not running", degraded)
        if writer.failing is not None:
            return Readiness(False, f"the last write failed: {writer.failing}", degraded)
        try:
            answers = await reader.answers(writer.path)
        except Exception:
            answers = False
        if not answers:
            return Readiness(False, "the current results file does not answer", degraded)
        return Readiness(True, None, degraded)


class UtcTextCache:
    """`utc_text` for the receive time of every batch, with the text of the
    whole second kept from the call before: the seconds change rarely at
    thousands of batches a second, and datetime's formatting is ~3 us of the
    one-result request. The same text as `utc_text` (microseconds rounded half
    to even, as `datetime.fromtimestamp` does; tests/test_utc_text_cache.py)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second: int | None = None
        self._prefix = ""

    def text(self, moment: float) -> str:
        fraction, whole = math.modf(moment)
        second = int(whole)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000 or micros < 0:  # a carry, or a moment before 1970
            return utc_text(moment)
        if second != self._second:
            self._prefix = utc_text(second)[:19]
            self._second = second
        return f"{self._prefix}.{micros:06d}Z"


def _check_same_body(stored: str | None, given: str | None) -> None:
    if stored is not None and given is not None and stored != given:
        raise IdempotencyConflict("Idempotency-Key was already used for a different batch")


def _maybe_text(moment: float | None) -> str | None:
    return None if moment is None else utc_text(moment)
