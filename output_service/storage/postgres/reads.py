"""`Reads` on PostgreSQL: the query API over the shared tables.

The answers are shaped by the same backend-neutral helpers as on SQLite
(`insight.summaries`, `insight.routes`, `insight.cursor`), so the same data
gives the same replies on both (tests/test_api_backends.py). Closed partitions
are read through their summaries (`target_partials`, `export_chunks`, kept by
`summaries`); the rows still arriving are read as they are. Filters whose
summaries are not kept (time ranges for targets, any filter for an export) are
one statement over the rows they select, with exact nearest-rank percentiles by
`percentile_disc`; a time-range page reads only the partitions holding it.

Every read holds a slot of the instance's `ReadGate` (the same bound on
concurrent reads as on SQLite) and its share of time (`read_share`); each
statement runs with the gate's time limit; a read over it is a 503
(`ReadBusy`), never a 500. While ingest is busy the reads also yield to it as
on SQLite (`read_share_while_ingesting`): most of a read's cost here is the
database's CPU, which ingest needs too and no client can deprioritise, so the
time its statements ran is charged to the gate (the steps on the read threads
charge their own CPU time), and the next read waits in its slot until that is
paid back at the share.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec

from output_service.insight import cursor as cursors
from output_service.insight.routes import Observation, summarize
from output_service.insight.stats import loss_pct
from output_service.insight.summaries import merge_nodes, series, sort_targets
from output_service.storage.postgres import closed, export_chunks, queries, recent
from output_service.storage.postgres.connection import Conn
from output_service.storage.postgres.hop_listing import hop_listing
from output_service.storage.postgres.read_share import ReadShare
from output_service.storage.postgres.target_partials import Cpu, TargetPartials, cacheable
from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import (
    BadQuery,
    ReadBusy,
    ResultFilter,
    ResultPage,
    SeriesQuery,
    TargetQuery,
)

EXPORT_CHUNK = 2000  # rows fetched from the export's cursor at a time
T = TypeVar("T")
U = TypeVar("U")


class PgReads:
    def __init__(self, pool: Callable[[], asyncpg.Pool], gate: ReadGate) -> None:
        self._pool = pool
        self.gate = gate
        self._partials = TargetPartials()
        self._share = ReadShare()

    async def _read(self, work: Callable[[Conn, float, Cpu], Awaitable[T]]) -> T:
        """`work(conn, timeout_s, cpu)` in a gate slot on a pooled connection; a
        statement past the time limit becomes ReadBusy. `cpu(step)` runs the
        read's Python work (decoding, merging, summarising) on the gate's read
        threads, at a lower CPU priority than the event loop that serves ingest
        (as the SQLite backend's reads run)."""
        gate = self.gate
        try:
            await self._share.admit(gate.queue_wait_s)
        except ReadBusy:
            gate.refused += 1
            raise
        async with gate.slot() as steps, self._pool().acquire() as conn:
            # while ingest is busy: until the reads before have been paid back
            await gate.yield_to_ingest()
            started = time.monotonic()  # time running, not waiting for a slot
            on_threads = [0.0]  # wall time of the steps on the read threads

            async def cpu(step: Callable[[], U]) -> U:
                began = time.monotonic()
                try:
                    return await steps.run(lambda _deadline: step())
                finally:
                    on_threads[0] += time.monotonic() - began

            try:
                return await work(conn, gate.timeout_s, cpu)
            except (TimeoutError, asyncpg.QueryCanceledError):
                gate.refused += 1
                raise ReadBusy(
                    f"the read ran longer than {gate.timeout_s:g} s; narrow the query or retry"
                ) from None
            finally:
                ran = time.monotonic() - started
                self._share.spend(ran)
                # the statements' time, as the database's CPU it stands for (the
                # steps on the threads charge their own CPU time)
                gate.charge(max(0.0, ran - on_threads[0]))

    async def _fetch(
        self,
        statement: tuple[str, list[Any]],
        then: Callable[[list[Any]], U],
        *,
        off_loop: bool = True,
    ) -> U:
        """One statement's rows, turned into the answer by `then`: off the event loop
        unless the work is small (a target's week: ~140 rows), where the hop to a
        read thread at lower priority costs more than it saves on a busy machine."""
        sql, args = statement

        async def work(conn: Conn, limit_s: float, cpu: Cpu) -> U:
            rows = await conn.fetch(sql, *args, timeout=limit_s)
            return await cpu(lambda: then(rows)) if off_loop else then(rows)

        return await self._read(work)

    # -- results -----------------------------------------------------------------

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        return await self._read(lambda c, t, _: recent.recent(c, limit, ip, t))

    async def results_page(self, flt: ResultFilter, limit: int, cursor: str | None) -> ResultPage:
        before = _decode(cursor)

        def page(rows: list[Any]) -> ResultPage:
            items = msgspec.json.decode("[" + ",".join(r["item"] for r in rows[:limit]) + "]")
            next_cursor = None
            if len(rows) > limit:
                next_cursor = cursors.encode(cursors.Position("", rows[limit - 1]["id"]))
            return ResultPage(items, next_cursor)

        if flt.since is None and flt.until is None:
            return await self._fetch(queries.items(flt, before, limit + 1), page)

        async def in_range(conn: Conn, limit_s: float, cpu: Cpu) -> ResultPage:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                within = await closed.holding(conn, flt.since, flt.until)
                sql, args = queries.items(flt, before, limit + 1, within=within)
                rows = await conn.fetch(sql, *args, timeout=limit_s)
            return await cpu(lambda: page(rows))

        return await self._read(in_range)

    async def iter_results(self, flt: ResultFilter) -> AsyncIterator[list[str]]:
        """Every match as JSON text, newest first, from server-side cursors in one
        read-only snapshot: the server holds the position, this process only one
        chunk. (A PostgreSQL snapshot does not block the writers, only vacuum.)
        Everything, unfiltered: the pre-rendered runs and the rows after them,
        merged by id (`export_chunks`); with a filter: one statement over the rows
        it selects. Either way in the order of the pages (id, newest first)."""
        async with (
            self.gate.slot(),
            self._pool().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            timeout = self.gate.timeout_s
            if flt == export_chunks.EVERYTHING:
                chunks = export_chunks.everything(conn, EXPORT_CHUNK, timeout)
            else:
                chunks = _items(export_chunks.rendered(conn, queries.items(flt, None, None),
                                                       EXPORT_CHUNK, timeout))  # fmt: skip
            try:
                async for chunk in chunks:
                    yield chunk
            except TimeoutError:
                raise ReadBusy("the export stalled; retry") from None

    # -- summaries -----------------------------------------------------------------

    async def targets(self, query: TargetQuery) -> list[dict[str, Any]]:
        """Closed partitions' partials merged with the live rows' (`target_partials`)
        where the filter allows it; otherwise one aggregate over the matching rows."""
        flt = query.filter
        if cacheable(flt):
            rows = await self._read(lambda c, t, cpu: self._partials.rows(c, flt, t, cpu))
        else:
            rows = await self._fetch(queries.targets(flt), lambda rs: [_target(r) for r in rs])
        ordered = sort_targets(rows, query.sort)
        return ordered[query.offset : query.offset + query.limit]

    async def target(self, query: SeriesQuery) -> dict[str, Any] | None:
        def answer(rows: list[Any]) -> dict[str, Any] | None:
            if not rows:
                return None
            return series(query.ip, query.step_s, (tuple(r) for r in rows))

        return await self._fetch(queries.series_rows(query.filter), answer, off_loop=False)

    async def routes(self, ip: str, flt: ResultFilter) -> dict[str, Any]:
        def answer(rows: list[Any]) -> dict[str, Any]:
            observations = [
                Observation(
                    r["node_id"],
                    r["timestamp"],
                    tuple(
                        None if out or not hop else hop
                        for hop, out in zip(r["ips"] or (), r["timeouts"] or (), strict=True)
                    ),
                )
                for r in rows
            ]
            return {"ip": ip, **summarize(observations)}

        return await self._fetch(queries.route_rows(flt), answer, off_loop=False)

    async def nodes(self, silent_after_s: float, now: float) -> list[dict[str, Any]]:
        async def both(conn: Conn, limit_s: float, _: Cpu) -> tuple[list[Any], list[Any]]:
            batch_rows = await conn.fetch(queries.NODE_BATCHES, timeout=limit_s)
            result_rows = await conn.fetch(queries.NODE_RESULTS, timeout=limit_s)
            return [tuple(r) for r in batch_rows], [tuple(r) for r in result_rows]

        return merge_nodes([await self._read(both)], silent_after_s, now)

    async def hops(self, limit: int, offset: int) -> dict[str, Any]:
        """/api/hops from the shared hop tables (the same reply shape as on SQLite)."""
        return await self._read(lambda c, t, _: hop_listing(c, limit, offset, t))


async def _items(rows: AsyncIterator[list[tuple[int, str]]]) -> AsyncIterator[list[str]]:
    async for chunk in rows:
        yield [item for _, item in chunk]


def _target(r: asyncpg.Record) -> dict[str, Any]:
    """One /api/targets row, in the key order of `TargetAccumulator.rows`; the mean is
    rounded here from the exact sum (as Python's round does on SQLite's side)."""
    count = r["rtt_count"]
    p50, p95 = r["rtt_pct"] if r["rtt_pct"] is not None else (None, None)
    return {
        "ip": r["ip"],
        "results": r["results"],
        "failed": r["failed"],
        "loss_pct": loss_pct(r["loss_sum"] / r["results"]),
        "rtt_min_ns": r["rtt_min"],
        "rtt_avg_ns": round(int(r["rtt_sum"]) / count) if count else None,
        "rtt_p50_ns": p50,
        "rtt_p95_ns": p95,
        "rtt_max_ns": r["rtt_max"],
        "nodes": r["nodes"],
        "first_seen": r["first_seen"],
        "last_seen": r["last_seen"],
    }


def _decode(cursor: str | None) -> int | None:
    """The id a cursor names; a cursor naming a file came from a SQLite instance."""
    if cursor is None:
        return None
    try:
        position = cursors.decode(cursor)
    except cursors.BadCursor as exc:
        raise BadQuery(str(exc)) from None
    if position.file != "":
        raise BadQuery("cursor is not one this service handed out (it names a results file)")
    return position.id
