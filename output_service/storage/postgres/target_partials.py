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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from output_service.insight.summaries import TargetAccumulator
from output_service.storage.postgres import closed as closed_parts
from output_service.storage.postgres import queries
from output_service.storage.postgres.connection import Conn
from output_service.storage.seam import ResultFilter

MAX_MERGED = 16  # merged accumulators kept per instance (one per filter)
LIVE_LAG = dt.timedelta(seconds=5)  # live rows before now - LIVE_LAG are merged and kept
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
    counted: int  # live rows (any filter) that arrived before `cut`
    acc: TargetAccumulator
    rows: dict[str, dict[str, Any]]


class TargetPartials:
    """The per-instance side, per filter: closed partials and the live rows up to a
    few seconds ago, merged and turned into rows once; a query adds only the rows
    that arrived since (as the SQLite backend's cache extends a live file by id).

    The live part is cut by arrival time, LIVE_LAG behind the database's clock, so
    that every row before the cut is committed. Each extension first counts the
    live rows before the previous cut: a row committed late (a transaction longer
    than the lag) changes that count, and the live part is then read again.
    """

    def __init__(self) -> None:
        self._stable: dict[str, _Stable] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def rows(self, conn: Conn, flt: ResultFilter, limit_s: float) -> list[dict[str, Any]]:
        """Every target's /api/targets row (unsorted) for a cacheable filter."""
        key = filter_key(flt)
        span = await closed_parts.span(conn)
        done = await closed_parts.built(conn, key, span.closed)
        for part in span.closed:
            if part.name not in done:
                await build(conn, flt, part, limit_s)
        async with (
            self._locks.setdefault(key, asyncio.Lock()),
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            stable = await self._advance(conn, key, flt, span, limit_s)
            sql, args = queries.target_partials(
                flt, queries.Received(stable.cut or stable.live_from, None)
            )
            fresh_rows = await conn.fetch(sql, *args, timeout=limit_s)
        out = dict(stable.rows)
        if fresh_rows:
            now = TargetAccumulator()
            now.merge(stable.acc.only(r["ip"] for r in fresh_rows))
            _add(now, fresh_rows)
            out.update((r["ip"], r) for r in now.rows())
        return list(out.values())

    async def _advance(
        self, conn: Conn, key: str, flt: ResultFilter, span: closed_parts.Span, limit_s: float
    ) -> _Stable:
        """The stable part for this filter, extended to now - LIVE_LAG."""
        ident = tuple((c.name, c.top) for c in span.closed)
        stable = self._stable.get(key)
        if stable is None or stable.ident != ident or stable.live_from != span.live.start:
            stable = await self._closed(conn, key, ident, span, limit_s)
        cut = span.now - LIVE_LAG
        if stable.cut is not None and cut <= stable.cut:
            return stable
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE received_at < $2), count(*) FROM ping_results"
            " WHERE received_at >= $1 AND received_at < $3",
            stable.live_from or EPOCH,
            stable.cut or stable.live_from or EPOCH,
            cut,
            timeout=limit_s,
        )
        assert counts is not None  # an aggregate without GROUP BY returns one row
        before, upto = counts
        if before != stable.counted:  # a row arrived late, behind the cut: read the live rows again
            stable = await self._closed(conn, key, ident, span, limit_s)
        sql, args = queries.target_partials(
            flt, queries.Received(stable.cut or stable.live_from, cut)
        )
        extension = await conn.fetch(sql, *args, timeout=limit_s)
        _add(stable.acc, extension)
        stable.acc.compact()
        stable.rows.update((r["ip"], r) for r in stable.acc.only(r["ip"] for r in extension).rows())
        stable.cut, stable.counted = cut, upto
        return stable

    async def _closed(
        self,
        conn: Conn,
        key: str,
        ident: tuple[tuple[str, int], ...],
        span: closed_parts.Span,
        limit_s: float,
    ) -> _Stable:
        """The closed partitions' partials merged (no live rows yet)."""
        acc = TargetAccumulator()
        rows = await conn.fetch(
            "SELECT ip, results, failed, loss_sum, first_seen, last_seen, rtts, nodes"
            " FROM target_partials WHERE filter_key = $1 AND part = ANY($2::text[])",
            key,
            [name for name, _ in ident],
            timeout=limit_s,
        )
        _add(acc, rows)
        acc.compact(max_runs=1)
        stable = _Stable(ident, span.live.start, None, 0, acc, {r["ip"]: r for r in acc.rows()})
        if len(self._stable) >= MAX_MERGED and key not in self._stable:
            self._stable.pop(next(iter(self._stable)))
        self._stable[key] = stable
        return stable
