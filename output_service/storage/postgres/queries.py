"""SQL of the query API on PostgreSQL, and the WHERE clause of a filter.

The same semantics as the SQLite backend's `sqlite_reads/queries.py` (same
filters, same definition of a failed result, the /recent item shape in the same
key order) so both backends answer alike. Items are built as JSON text by the
server (json_build_object), so an export costs one string per result here.
Percentiles are computed by the server with `percentile_disc`, which is the
nearest rank of `insight.stats.nearest_rank`: the first value whose cumulative
position reaches ceil(p * n), p a float8 as in Python.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from output_service.storage.seam import ResultFilter

FAILED = "((p.error IS NOT NULL AND p.error <> '') OR p.received = 0)"
# utc_text's format (microseconds, Z), which SQLite stores for batches.received_at
UTC_TEXT = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

_HOPS_JSON = (
    "coalesce((SELECT json_agg(json_build_object('ttl', h.ttl, 'ip', coalesce(h.ip, ''),"
    " 'rtt', h.rtt, 'timeout', h.timeout) ORDER BY h.id)"
    " FROM traceroute_hops h WHERE h.traceroute_id = t.id AND h.received_at = t.received_at),"
    " '[]'::json)"
)
_TRACE_JSON = (
    "(SELECT json_build_object('method', t.method, 'completed', t.completed,"
    f" 'error', coalesce(t.error, ''), 'hops', {_HOPS_JSON})"
    " FROM traceroute_results t WHERE t.ping_result_id = p.id AND t.received_at = p.received_at)"
)
ITEM_JSON = (
    "json_build_object('id', p.id, 'ip', p.ip, 'sent', p.sent, 'received', p.received,"
    " 'packet_loss', p.packet_loss, 'avg_rtt', p.avg_rtt, 'timestamp', p.timestamp,"
    " 'error', coalesce(p.error, ''), 'node_id', b.node_id,"
    f" 'received_at', {UTC_TEXT.format('p.received_at')},"
    f" 'traceroute', {_TRACE_JSON}, 'file', '')::text"
)
_FROM = "FROM ping_results p LEFT JOIN batches b ON b.id = p.batch_id"
# the hops of one traceroute, in TTL order (ids break ties), as two arrays
_ROUTE_HOPS = (
    " LEFT JOIN LATERAL (SELECT array_agg(coalesce(x.ip, '') ORDER BY x.ttl, x.id) AS ips,"
    " array_agg(x.timeout ORDER BY x.ttl, x.id) AS timeouts FROM traceroute_hops x"
    " WHERE x.traceroute_id = t.id AND x.received_at = t.received_at) h ON true"
)


@dataclass(frozen=True, slots=True)
class Received:
    """Arrival bounds [start, end) (either open): lets the planner prune partitions."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None


class _Params:
    """Positional parameters ($1, $2, ...) collected while a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def where(
    flt: ResultFilter,
    params: _Params,
    *,
    before_id: int | None = None,
    upto_id: int | None = None,
    received: Received | None = None,
    within: list[Received] | None = None,
) -> str:
    """The WHERE clause of `flt`, plus `p.id < before_id`, `p.id <= upto_id`, the
    arrival bounds and the partitions to read (`within`, [start, end) each) when
    given; the one filter builder of every statement here."""
    clauses: list[str] = []
    if flt.ip is not None:
        clauses.append(f"p.ip = {params.add(flt.ip)}")
    if flt.since is not None:
        clauses.append(f"p.timestamp >= {params.add(flt.since)}")
    if flt.until is not None:
        clauses.append(f"p.timestamp < {params.add(flt.until)}")
    if flt.failed is not None:
        clauses.append(FAILED if flt.failed else f"NOT {FAILED}")
    if flt.node is not None:
        clauses.append(
            f"p.batch_id IN (SELECT id FROM batches WHERE node_id = {params.add(flt.node)})"
        )
    elif flt.node_is_null:
        clauses.append(
            "(p.batch_id IS NULL OR p.batch_id IN (SELECT id FROM batches WHERE node_id IS NULL))"
        )
    if before_id is not None:
        clauses.append(f"p.id < {params.add(before_id)}")
    if upto_id is not None:
        clauses.append(f"p.id <= {params.add(upto_id)}")
    if received is not None and received.start is not None:
        clauses.append(f"p.received_at >= {params.add(received.start)}")
    if received is not None and received.end is not None:
        clauses.append(f"p.received_at < {params.add(received.end)}")
    if within is not None:
        spans = [
            f"(p.received_at >= {params.add(r.start)} AND p.received_at < {params.add(r.end)})"
            for r in within
        ]
        clauses.append("(" + " OR ".join(spans) + ")" if spans else "false")
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _select(
    columns: str, flt: ResultFilter, *, joins: str = "", tail: str = "", **bounds: Any
) -> tuple[str, list[Any]]:
    """`SELECT columns FROM results [joins] WHERE <flt> tail`, and its parameters."""
    params = _Params()
    cond = where(flt, params, **bounds)
    return f"SELECT {columns} {_FROM}{joins}{cond}{tail}", params.values


def items(
    flt: ResultFilter,
    before_id: int | None,
    limit: int | None,
    *,
    received: Received | None = None,
    upto_id: int | None = None,
    within: list[Received] | None = None,
) -> tuple[str, list[Any]]:
    """(id, item JSON text), newest arrival first."""
    sql, values = _select(
        f"p.id, {ITEM_JSON} AS item",
        flt,
        before_id=before_id,
        upto_id=upto_id,
        received=received,
        within=within,
    )
    sql += " ORDER BY p.id DESC"
    if limit is not None:
        values.append(limit)
        sql += f" LIMIT ${len(values)}"
    return sql, values


_REPLIED = "FILTER (WHERE p.received > 0)"


def targets(flt: ResultFilter) -> tuple[str, list[Any]]:
    """One row per target with everything its summary needs; nodes counts NULL as one."""
    return _select(
        "p.ip, count(*) AS results, count(*) FILTER (WHERE " + FAILED + ") AS failed,"
        " sum(p.packet_loss) AS loss_sum, min(p.timestamp) AS first_seen,"
        " max(p.timestamp) AS last_seen,"
        f" min(p.avg_rtt) {_REPLIED} AS rtt_min, max(p.avg_rtt) {_REPLIED} AS rtt_max,"
        f" sum(p.avg_rtt) {_REPLIED} AS rtt_sum, count(*) {_REPLIED} AS rtt_count,"
        " percentile_disc(ARRAY[0.5, 0.95]::float8[]) WITHIN GROUP (ORDER BY p.avg_rtt)"
        f" {_REPLIED} AS rtt_pct,"
        " count(DISTINCT b.node_id) + (bool_or(b.node_id IS NULL))::int AS nodes",
        flt,
        tail=" GROUP BY p.ip",
    )


# A target's partial over some rows, in the shape TargetAccumulator takes: totals,
# ascending RTTs of replied results comma-joined, and the node set (NULL included).
PARTIAL_COLUMNS = (
    "p.ip, count(*) AS results, count(*) FILTER (WHERE " + FAILED + ") AS failed,"
    " sum(p.packet_loss) AS loss_sum, min(p.timestamp) AS first_seen,"
    " max(p.timestamp) AS last_seen,"
    f" string_agg(p.avg_rtt::text, ',' ORDER BY p.avg_rtt) {_REPLIED} AS rtts,"
    " array_agg(DISTINCT b.node_id) AS nodes"
)


def target_partials(
    flt: ResultFilter, received: Received, upto_id: int | None = None
) -> tuple[str, list[Any]]:
    """PARTIAL_COLUMNS per target over the rows that arrived within `received`."""
    return _select(PARTIAL_COLUMNS, flt, tail=" GROUP BY p.ip", received=received, upto_id=upto_id)


def series_rows(flt: ResultFilter) -> tuple[str, list[Any]]:
    """(timestamp, received, packet_loss, avg_rtt, failed, node) as `summaries.series` takes."""
    return _select(f"p.timestamp, p.received, p.packet_loss, p.avg_rtt, {FAILED}, b.node_id", flt)


def route_rows(flt: ResultFilter) -> tuple[str, list[Any]]:
    """(timestamp, node, hop ips, hop timeouts) of results with a traceroute, hops by ttl."""
    joins = (
        " JOIN traceroute_results t ON t.ping_result_id = p.id AND t.received_at = p.received_at"
        + _ROUTE_HOPS
    )
    return _select("p.timestamp, b.node_id, h.ips, h.timeouts", flt, joins=joins)


NODE_BATCHES = (
    "SELECT node_id, remote, count(*), "
    + UTC_TEXT.format("min(received_at)")
    + ", "
    + UTC_TEXT.format("max(received_at)")
    + " FROM batches GROUP BY node_id, remote"
)
NODE_RESULTS = (
    f"SELECT b.node_id, count(*), count(*) FILTER (WHERE {FAILED}) {_FROM} GROUP BY b.node_id"
)
