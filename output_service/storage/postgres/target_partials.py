"""/api/targets on PostgreSQL: per-partition partials of closed partitions, merged with
one aggregate over the rows still arriving.

One aggregate over a week of raw rows costs seconds (a sort of every result by
target, then one more per target for the percentiles). A closed partition's
per-target partial (totals, the node set, the ascending RTTs) never changes, so
it is built once into `target_partials` and every later query reads it back;
only the live partition is aggregated per query. Percentiles stay exact: the
RTTs of all partitions are merged before the nearest rank is taken
(`insight.summaries.TargetAccumulator`, the same merge the SQLite backend does
over its files).

Each instance also keeps the merge of the closed partials in memory, for as long
as the set of closed partitions (and their largest ids) is the same: a query
then merges two accumulators, the closed ones' and the live one's.

Only filters with a bounded number of values are kept this way (failed=, node=):
an ip= or since/until query is answered by one aggregate over the rows it
selects, which the ip and timestamp indexes keep small.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from output_service.insight.summaries import TargetAccumulator
from output_service.storage.postgres import closed as closed_parts
from output_service.storage.postgres import queries
from output_service.storage.postgres.connection import Conn
from output_service.storage.seam import ResultFilter

T = TypeVar("T")
MAX_MERGED = 16  # merged accumulators kept per instance (one per filter)
LIVE_LAG = dt.timedelta(seconds=0.5)  # the cut is at least this far behind the clock
# The live rows kept merged are those that arrived before the oldest transaction still
# open on this database began (a writer stamps its rows with its start: all rows before
# it are committed), and at least LIVE_LAG ago. Where other sessions' transactions are
# hidden (another role without pg_read_all_stats), only LIVE_LAG holds, and the count
# check below finds a row that committed behind the cut.
CUT_SQL = (
    "SELECT least(now() - $1::interval, min(xact_start)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND pid <> pg_backend_pid()"
)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Results the writers stored in the hours from the live range's start on (kept with the
# rows, in the same transactions; schema version 4). The hour holding the start may hold
# rows of the closed partition before it too: those never change, so they do not move
# the difference the check compares.
KEPT_SQL = (
    "SELECT coalesce(sum(rows), 0) FROM arrival_counts"
    " WHERE bucket >= date_trunc('hour', $1::timestamptz, 'UTC')"
)


def cacheable(flt: ResultFilter) -> bool:
    return flt.ip is None and flt.since is None and flt.until is None


def filter_key(flt: ResultFilter) -> str:
    return f"targets failed={flt.failed} node={flt.node!r} null={flt.node_is_null}"


def _add(acc: TargetAccumulator, rows: Iterable[asyncpg.Record]) -> None:
    """Rows of PARTIAL_COLUMNS into `acc`."""
    plain = [tuple(r) for r in rows]
    acc.add_totals(r[:6] for r in plain)
    acc.add_rtts((r[0], r[6]) for r in plain)
    acc.add_nodes((r[0], node) for r in plain for node in r[7])


async def build(conn: Conn, flt: ResultFilter, part: closed_parts.Closed, limit_s: float) -> None:
    """Write the partials of one closed partition (if no other instance just did)."""
    key = filter_key(flt)
    async with conn.transaction():
        if not await closed_parts.begin_build(conn, key, part):
            return
        await conn.execute(
            "DELETE FROM target_partials WHERE part = $1 AND filter_key = $2", part.name, key
        )
        select, args = queries.target_partials(flt, part.received, part.top)
        n = len(args)
        await conn.execute(
            "INSERT INTO target_partials (part, filter_key, ip, results, failed, loss_sum,"
            f" first_seen, last_seen, rtts, nodes)"
            f" SELECT ${n + 1}, ${n + 2}, s.* FROM ({select}) s",
            *args,
            part.name,
            key,
            timeout=limit_s,
        )
        await closed_parts.finish_build(conn, key, part)


@dataclass(slots=True)
class _Stable:
    """Closed partials plus the live rows that arrived before `cut`, merged."""

    ident: tuple[tuple[str, int], ...]  # the closed partitions (name, largest id)
    live_from: dt.datetime | None
    cut: dt.datetime | None  # None: no live rows in yet
    counted: int  # the kept count less the rows after `cut` (see `_after`)
    acc: TargetAccumulator
    rows: dict[str, dict[str, Any]]
    base: TargetAccumulator  # the closed partials alone (never changed)
    base_rows: dict[str, dict[str, Any]]


class Cpu(Protocol):
    """Runs a pure-Python step off the event loop (a read thread at lower priority)."""

    def __call__(self, step: Callable[[], T]) -> Awaitable[T]: ...


class TargetPartials:
    """The per-instance side, per filter: closed partials and the live rows up to a
    few seconds ago, merged and turned into rows once; a query adds only the rows
    that arrived since (as the SQLite backend's cache extends a live file by id).

    The live part is cut by arrival time where every row before the cut is
    committed (`CUT_SQL`). Each extension first checks that nothing arrived
    behind the previous cut: the writers' kept count of the live hours
    (`arrival_counts`) less the rows after that cut is what it was then, unless
    a row committed behind it; the live part is then read again (the closed
    partials' merge is kept apart for that). Both counts, the extension and the
    fresh rows are range scans of the arrival index from the previous cut on,
    so a query's cost on the live partition follows the rows that arrived since
    the last query, not the partition's size (BENCHMARKS.md, "Query API on
    PostgreSQL, round four"). The merging runs through `cpu` (off the event
    loop, which serves ingest).
    """

    def __init__(self) -> None:
        self._stable: dict[str, _Stable] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def rows(
        self, conn: Conn, flt: ResultFilter, limit_s: float, cpu: Cpu
    ) -> list[dict[str, Any]]:
        """Every target's /api/targets row (unsorted) for a cacheable filter."""
        key = filter_key(flt)
        span = await closed_parts.span(conn)
        done = await closed_parts.built(conn, key, span.closed)
        for part in span.closed:
            if part.name not in done:
                await build(conn, flt, part, limit_s)
        # before the snapshot below: every row that arrived before `cut` is in it
        cut: dt.datetime = await conn.fetchval(CUT_SQL, LIVE_LAG, timeout=limit_s)
        async with self._locks.setdefault(key, asyncio.Lock()):
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                stable = await self._advance(conn, key, flt, span, cut, limit_s, cpu)
                sql, args = queries.target_partials(
                    flt, queries.Received(stable.cut or stable.live_from, None)
                )
                fresh = await conn.fetch(sql, *args, timeout=limit_s)
            # under the lock: the next query's extension changes `stable`
            return await cpu(lambda: _with_fresh(stable, fresh))

    async def _advance(
        self,
        conn: Conn,
        key: str,
        flt: ResultFilter,
        span: closed_parts.Span,
        cut: dt.datetime,
        limit_s: float,
        cpu: Cpu,
    ) -> _Stable:
        """The stable part for this filter, extended to `cut`."""
        ident = tuple((c.name, c.top) for c in span.closed)
        stable = self._stable.get(key)
        if stable is None or stable.ident != ident or stable.live_from != span.live.start:
            stable = await self._closed(conn, key, ident, span, limit_s, cpu)
        if stable.cut is not None and cut <= stable.cut:
            return stable
        kept: int = await conn.fetchval(KEPT_SQL, stable.live_from or EPOCH, timeout=limit_s)
        after_cut, after_last = await _after(conn, cut, stable.cut, limit_s)
        if stable.cut is not None and kept - after_last != stable.counted:
            # a row arrived late, behind the last cut: read the live rows again
            stale = stable
            stable = self._stable[key] = await cpu(lambda: _live_again(stale))
        since = stable.cut or stable.live_from
        sql, args = queries.target_partials(flt, queries.Received(since, cut))
        extension = await conn.fetch(sql, *args, timeout=limit_s)
        await cpu(lambda: _extend(stable, extension))
        stable.cut, stable.counted = cut, kept - after_cut
        return stable

    async def _closed(
        self,
        conn: Conn,
        key: str,
        ident: tuple[tuple[str, int], ...],
        span: closed_parts.Span,
        limit_s: float,
        cpu: Cpu,
    ) -> _Stable:
        """The closed partitions' partials merged (no live rows yet)."""
        rows = await conn.fetch(
            "SELECT ip, results, failed, loss_sum, first_seen, last_seen, rtts, nodes"
            " FROM target_partials WHERE filter_key = $1 AND part = ANY($2::text[])",
            key,
            [name for name, _ in ident],
            timeout=limit_s,
        )
        stable = await cpu(lambda: _merged(ident, span.live.start, rows))
        if len(self._stable) >= MAX_MERGED and key not in self._stable:
            self._stable.pop(next(iter(self._stable)))
        self._stable[key] = stable
        return stable


async def _after(
    conn: Conn, cut: dt.datetime, last: dt.datetime | None, limit_s: float
) -> tuple[int, int]:
    """Rows that arrived at or after `cut`, and at or after the `last` cut (0 with none),
    by the arrival index: the rows since the last query, not the whole partition."""
    if last is None:
        n = await conn.fetchval(
            "SELECT count(*) FROM ping_results WHERE received_at >= $1", cut, timeout=limit_s
        )
        return n, 0
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE received_at >= $1), count(*) FROM ping_results"
        " WHERE received_at >= $2",
        cut,
        last,
        timeout=limit_s,
    )
    assert row is not None  # an aggregate without GROUP BY returns one row
    return row[0], row[1]


def _merged(
    ident: tuple[tuple[str, int], ...], live_from: dt.datetime | None, rows: list[asyncpg.Record]
) -> _Stable:
    base = TargetAccumulator()
    _add(base, rows)
    base.compact(max_runs=1)
    return _live_again(
        _Stable(ident, live_from, None, 0, base, {}, base, {r["ip"]: r for r in base.rows()})
    )


def _live_again(old: _Stable) -> _Stable:
    """The closed partials with no live rows yet (their merge is kept apart)."""
    acc = TargetAccumulator()
    acc.merge(old.base)
    return _Stable(
        old.ident, old.live_from, None, 0, acc, dict(old.base_rows), old.base, old.base_rows
    )


def _extend(stable: _Stable, rows: list[asyncpg.Record]) -> None:
    _add(stable.acc, rows)
    stable.acc.compact()
    stable.rows.update((r["ip"], r) for r in stable.acc.only(r["ip"] for r in rows).rows())


def _with_fresh(stable: _Stable, fresh: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """The stable rows with those of the targets that have fresh rows recomputed."""
    out = dict(stable.rows)
    if fresh:
        now = TargetAccumulator()
        now.merge(stable.acc.only(r["ip"] for r in fresh))
        _add(now, fresh)
        out.update((r["ip"], r) for r in now.rows())
    return list(out.values())
