"""The PostgreSQL writer: group commit, everything of a group in one transaction.

Requests enqueue a batch and await a future; a writer task (two by default, on
their own connections, so one builds a group while the other waits for its
commit to be flushed) takes what is queued (up to
`commit_max_results`), and in one transaction allocates ids, inserts the batches'
rows (idempotency keys unique in the database: `ON CONFLICT DO NOTHING`), COPYs
the results, traceroutes and hops, and queues new hop addresses in the shared
outbox. Only after COMMIT are the futures resolved: an acknowledged batch is in
the database, with its outbox rows. Many instances run this against one
database; keys and hop addresses are taken in sorted order so that two
instances' transactions cannot deadlock on each other (and if one ever does,
the group is tried once more).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from output_service.hops.extract import batch_hops
from output_service.storage.postgres.connection import RETRYABLE_STATES, Conn, is_unavailable
from output_service.storage.seam import QueueFull, StoreClosed, StoreError, Submission

log = structlog.get_logger("output_service.storage.postgres")

NO_PARTITION = "23514"  # check_violation: "no partition of relation ... found for row"

PING_COLUMNS = ("id", "received_at", "ip", "sent", "received", "packet_loss", "avg_rtt",
                "timestamp", "error", "batch_id", "raw")  # fmt: skip
TRACE_COLUMNS = ("id", "received_at", "ping_result_id", "method", "completed", "error")
HOP_COLUMNS = ("received_at", "traceroute_id", "ttl", "ip", "rtt", "timeout")

_ALLOCATE = (
    "SELECT now(),"
    " ARRAY(SELECT nextval('batches_id_seq') FROM generate_series(1, $1)),"
    " ARRAY(SELECT nextval('ping_results_id_seq') FROM generate_series(1, $2))"
)
# The batches inserted (a key stored before is not), and their results added to the
# kept count of their hour of arrival (`arrival_counts`, schema version 4) in the same
# statement: one row per hour and backend, so two writers never wait on each other.
_INSERT_BATCHES = (
    "WITH inserted AS ("
    " INSERT INTO batches (id, received_at, remote, node_id, idempotency_key, body_hash,"
    " result_count, failed_count)"
    " SELECT b.id, $2, b.remote, b.node_id, b.key, b.hash, b.n, b.failed FROM unnest("
    "$1::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[])"
    " AS b(id, remote, node_id, key, hash, n, failed)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, result_count),"
    " counted AS ("
    " INSERT INTO arrival_counts (bucket, writer, rows)"
    " SELECT date_trunc('hour', $2::timestamptz, 'UTC'), pg_backend_pid(), sum(result_count)"
    " FROM inserted HAVING count(*) > 0"
    " ON CONFLICT (bucket, writer) DO UPDATE SET rows = arrival_counts.rows + excluded.rows)"
    " SELECT id FROM inserted"
)
_EARLIER = (
    "SELECT idempotency_key, result_count, body_hash FROM batches"
    " WHERE idempotency_key = ANY($1::text[])"
)
# a hop address is queued once however many instances see it, and again only when
# it is seen `resend` after it was last queued
_QUEUE_HOPS = (
    "WITH fresh AS ("
    " INSERT INTO hops_seen (ip, queued_at) SELECT unnest($1::text[]), $2"
    " ON CONFLICT (ip) DO UPDATE SET queued_at = excluded.queued_at"
    " WHERE hops_seen.queued_at < $3 RETURNING ip)"
    " INSERT INTO hop_outbox (ip, queued_at) SELECT ip, $2 FROM fresh"
    " ON CONFLICT (ip) DO NOTHING RETURNING ip"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    count: int
    failed: int = 0
    duplicate: bool = False
    body_hash: str | None = None


@dataclass(slots=True)
class _Pending:
    submission: Submission
    future: asyncio.Future[Outcome]


@dataclass(frozen=True, slots=True)
class WriterSettings:
    max_group_results: int
    queue_max_results: int
    hops: bool  # the feedback loop is on: queue hop addresses in the outbox
    exclude_private: bool = False
    resend_after_s: float = 7 * 86400
    writers: int = 2  # transactions in flight at once (BENCHMARKS.md "PostgreSQL cells")


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; SQLite can. Stored as U+FFFD (README Limits)."""
    if not value:
        return None
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


class PgWriter:
    """The tasks writing results from this instance, sharing one bounded queue."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: WriterSettings,
        on_commit: Callable[[int, int, int], None],
        on_lost: Callable[[BaseException], None],
        ensure_partitions: Callable[[], Any],
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._on_commit = on_commit  # (results stored, failed, hops queued)
        self._on_lost = on_lost
        self._ensure_partitions = ensure_partitions
        self._queue: deque[_Pending] = deque()
        self._queued_results = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queued_results(self) -> int:
        return self._queued_results

    @property
    def full(self) -> bool:
        return self._queued_results >= self._settings.queue_max_results

    def start(self) -> None:
        # Several transactions in flight: one commits (waits on the WAL flush) while
        # the next is built and sent, which a single task on one connection cannot do.
        self._tasks = [
            asyncio.create_task(self._run(), name=f"pg-writer-{n}")
            for n in range(self._settings.writers)
        ]

    def submit(self, submission: Submission) -> asyncio.Future[Outcome]:
        if self._closing or not self._tasks or all(t.done() for t in self._tasks):
            raise StoreClosed("shutting down")
        if self.full:
            raise QueueFull("write queue is full")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(submission, future))
        self._queued_results += len(submission.batch.results)
        self._wake.set()
        return future

    async def close(self) -> None:
        """Commit what is queued (or fail it), then stop."""
        self._closing = True
        self._wake.set()
        self._wake.set()
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                if self._closing:
                    self._wake.set()  # the other writer tasks must see it too
                continue
            group = self._take()
            if not await self._commit(group) and len(group) > 1:
                # not the database being away: one batch the database refuses must
                # not fail the others it happened to be grouped with
                for item in group:
                    await self._commit([item])

    async def _commit(self, group: list[_Pending]) -> bool:
        """Write a group and resolve its futures; False if it failed for a reason
        other than the database being unavailable (the futures are then left
        pending when the group has more than one batch, to be tried one by one)."""
        try:
            outcomes = await self._write_with_retry(group)
        except Exception as exc:
            error = _as_store_error(exc)
            if error.kind == "unavailable":
                self._on_lost(exc)
            elif len(group) > 1:
                return False
            else:
                log.error("write failed, nothing of the batch stored", error=str(error))
            for item in group:
                if not item.future.done():
                    item.future.set_exception(error)
            return True
        for item, outcome in zip(group, outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)
        return True

    def _take(self) -> list[_Pending]:
        group: list[_Pending] = []
        size = 0
        while self._queue and (not group or size < self._settings.max_group_results):
            item = self._queue.popleft()
            n = len(item.submission.batch.results)
            group.append(item)
            size += n
            self._queued_results -= n
        return group

    async def _write_with_retry(self, group: list[_Pending]) -> list[Outcome]:
        for attempt in range(3):
            try:
                return await self._write(group)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == NO_PARTITION and attempt == 0:
                    await self._ensure_partitions()  # maintenance fell behind: catch up
                elif exc.sqlstate not in RETRYABLE_STATES or attempt == 2:
                    raise
                log.warning("group retried", sqlstate=exc.sqlstate)
        raise AssertionError("unreachable")

    async def _write(self, group: Sequence[_Pending]) -> list[Outcome]:
        # keys in sorted order (no-key batches last): lock order shared by every instance
        order = sorted(
            range(len(group)),
            key=lambda i: (group[i].submission.idempotency_key is None,
                           group[i].submission.idempotency_key or ""),
        )  # fmt: skip
        subs = [group[i].submission for i in order]
        failed = [sum(1 for r in s.batch.results if r.error or r.received == 0) for s in subs]
        async with self._pool.acquire() as conn, conn.transaction():
            allocated = await conn.fetchrow(
                _ALLOCATE, len(subs), sum(len(s.batch.results) for s in subs)
            )
            assert allocated is not None  # a SELECT without FROM returns one row
            now, batch_ids, ping_ids = allocated
            inserted = {
                row["id"]
                for row in await conn.fetch(
                    _INSERT_BATCHES,
                    batch_ids,
                    now,
                    [_text(s.remote) for s in subs],
                    [_text(s.node_id) for s in subs],
                    [s.idempotency_key for s in subs],
                    [s.body_hash for s in subs],
                    [len(s.batch.results) for s in subs],
                    failed,
                )
            }
            earlier = await self._earlier(conn, subs, batch_ids, inserted)
            stored = [s for s, bid in zip(subs, batch_ids, strict=True) if bid in inserted]
            pings, traces, hops = _rows(subs, batch_ids, inserted, ping_ids, now)
            await _copy(conn, "ping_results", PING_COLUMNS, pings)
            await _copy(conn, "traceroute_results", TRACE_COLUMNS, traces)
            await _copy(conn, "traceroute_hops", HOP_COLUMNS, hops)
            queued = await self._queue_hops(conn, stored, now)
        outcomes: list[Outcome | None] = [None] * len(group)
        stored_results = stored_failed = 0
        for pos, (s, bid, nfail) in enumerate(zip(subs, batch_ids, failed, strict=True)):
            if bid in inserted:
                outcome = Outcome(len(s.batch.results), nfail, False, s.body_hash)
                stored_results += outcome.count
                stored_failed += nfail
            else:
                count, body_hash = earlier[s.idempotency_key or ""]
                outcome = Outcome(count, 0, True, body_hash)
            outcomes[order[pos]] = outcome
        self._on_commit(stored_results, stored_failed, queued)
        return [o for o in outcomes if o is not None]

    async def _earlier(
        self,
        conn: Conn,
        subs: Sequence[Submission],
        batch_ids: Sequence[int],
        inserted: set[int],
    ) -> dict[str, tuple[int, str | None]]:
        """Count and body hash of the stored batch for every key that was not inserted
        (stored earlier, by any instance, or twice in this group)."""
        keys = [
            s.idempotency_key
            for s, bid in zip(subs, batch_ids, strict=True)
            if bid not in inserted and s.idempotency_key is not None
        ]
        if not keys:
            return {}
        rows = await conn.fetch(_EARLIER, keys)
        return {r["idempotency_key"]: (r["result_count"], r["body_hash"]) for r in rows}

    async def _queue_hops(self, conn: Conn, stored: Sequence[Submission], now: dt.datetime) -> int:
        settings = self._settings
        if not settings.hops or not stored:
            return 0
        ips = sorted(batch_hops((s.batch for s in stored), settings.exclude_private))
        if not ips:
            return 0
        resend_before = now - dt.timedelta(seconds=settings.resend_after_s)
        return len(await conn.fetch(_QUEUE_HOPS, ips, now, resend_before))


def _rows(
    subs: Sequence[Submission],
    batch_ids: Sequence[int],
    inserted: set[int],
    ping_ids: Sequence[int],
    now: dt.datetime,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    pings: list[tuple[Any, ...]] = []
    traces: list[tuple[Any, ...]] = []
    hops: list[tuple[Any, ...]] = []
    next_id = iter(ping_ids)
    for s, batch_id in zip(subs, batch_ids, strict=True):
        raw = s.batch.raw
        for index, r in enumerate(s.batch.results):
            pid = next(next_id)
            if batch_id not in inserted:
                continue
            extra = raw.get(index) if raw else None
            pings.append((pid, now, r.ip, r.sent, r.received, r.packet_loss, r.avg_rtt,
                          r.timestamp, _text(r.error), batch_id,
                          _text(extra.decode()) if extra else None))  # fmt: skip
            t = r.traceroute
            if t is None:
                continue
            traces.append((pid, now, pid, _text(t.method), t.completed, _text(t.error)))
            for h in t.hops or ():
                hops.append((now, pid, h.ttl, _text(h.ip), h.rtt, h.timeout))
    return pings, traces, hops


async def _copy(
    conn: Conn, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    if rows:  # binary COPY: the fastest way in (BENCHMARKS.md, "PostgreSQL driver")
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))


def _as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if is_unavailable(exc):
        return StoreError("database unavailable", kind="unavailable")
    return StoreError(f"database error: {type(exc).__name__}", kind="io")
