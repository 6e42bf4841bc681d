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


class _Params:
    """Positional parameters ($1, $2, ...) collected while a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def where(flt: ResultFilter, params: _Params, *, before_id: int | None = None) -> str:
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
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def items(flt: ResultFilter, before_id: int | None, limit: int | None) -> tuple[str, list[Any]]:
    """(id, item JSON text), newest arrival first."""
    params = _Params()
    cond = where(flt, params, before_id=before_id)
    tail = f" LIMIT {params.add(limit)}" if limit is not None else ""
    return f"SELECT p.id, {ITEM_JSON} AS item {_FROM}{cond} ORDER BY p.id DESC{tail}", params.values


def targets(flt: ResultFilter) -> tuple[str, list[Any]]:
    """One row per target with everything its summary needs; nodes counts NULL as one."""
    params = _Params()
    cond = where(flt, params)
    replied = "FILTER (WHERE p.received > 0)"
    return (
        "SELECT p.ip, count(*) AS results, count(*) FILTER (WHERE " + FAILED + ") AS failed,"
        " sum(p.packet_loss) AS loss_sum, min(p.timestamp) AS first_seen,"
        " max(p.timestamp) AS last_seen,"
        f" min(p.avg_rtt) {replied} AS rtt_min, max(p.avg_rtt) {replied} AS rtt_max,"
        f" sum(p.avg_rtt) {replied} AS rtt_sum, count(*) {replied} AS rtt_count,"
        " percentile_disc(ARRAY[0.5, 0.95]::float8[]) WITHIN GROUP (ORDER BY p.avg_rtt)"
        f" {replied} AS rtt_pct,"
        " count(DISTINCT b.node_id) + (bool_or(b.node_id IS NULL))::int AS nodes"
        f" {_FROM}{cond} GROUP BY p.ip",
        params.values,
    )


def series_rows(flt: ResultFilter) -> tuple[str, list[Any]]:
    """(timestamp, received, packet_loss, avg_rtt, failed, node) as `summaries.series` takes."""
    params = _Params()
    cond = where(flt, params)
    return (
        f"SELECT p.timestamp, p.received, p.packet_loss, p.avg_rtt, {FAILED}, b.node_id"
        f" {_FROM}{cond}",
        params.values,
    )


def route_rows(flt: ResultFilter) -> tuple[str, list[Any]]:
    """(timestamp, node, hop ips, hop timeouts) of results with a traceroute, hops by ttl."""
    params = _Params()
    cond = where(flt, params)
    return (
        "SELECT p.timestamp, b.node_id, h.ips, h.timeouts"
        f" {_FROM} JOIN traceroute_results t"
        " ON t.ping_result_id = p.id AND t.received_at = p.received_at"
        " LEFT JOIN LATERAL (SELECT array_agg(coalesce(x.ip, '') ORDER BY x.ttl, x.id) AS ips,"
        " array_agg(x.timeout ORDER BY x.ttl, x.id) AS timeouts FROM traceroute_hops x"
        " WHERE x.traceroute_id = t.id AND x.received_at = t.received_at) h ON true"
        f"{cond}",
        params.values,
    )


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
