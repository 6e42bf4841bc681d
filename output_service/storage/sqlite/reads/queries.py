"""SQL of the query API over one results file, and the WHERE clause of a filter.

Items are built as JSON text by SQLite itself (json_object, json_group_array):
an export then costs one string per result in Python instead of a dict per
hop, which is what lets it stream at six figures of results per second. A
scalar subquery loses JSON's subtype, hence the json(...) around each.
"""

from __future__ import annotations

from typing import Any

from output_service.storage.seam import ResultFilter

# The service's definition of a failed result (as in results_file.FAILED_SQL).
FAILED = "((p.error IS NOT NULL AND p.error != '') OR p.received = 0)"

# Hops in index order (traceroute_id, then insertion order, which is the order
# the node sent them, TTL order in practice): an ORDER BY subquery per
# traceroute halves the export rate on SQLite before 3.44 (no ORDER BY inside
# aggregates there). /recent sorts by TTL; the two differ only for a node
# that sends hops out of TTL order.
_HOPS_JSON = (
    "json((SELECT json_group_array(json_object('ttl', h.ttl, 'ip', coalesce(h.ip, ''),"
    " 'rtt', h.rtt, 'timeout', json(iif(h.timeout, 'true', 'false'))))"
    " FROM traceroute_hops h WHERE h.traceroute_id = t.id))"
)
_TRACE_JSON = (
    "json((SELECT json_object('method', t.method,"
    " 'completed', json(iif(t.completed, 'true', 'false')), 'error', coalesce(t.error, ''),"
    f" 'hops', {_HOPS_JSON})"
    " FROM traceroute_results t WHERE t.ping_result_id = p.id))"
)
# The /recent item shape, in /recent's key order, with the file it is in.
ITEM_JSON = (
    "json_object('id', p.id, 'ip', p.ip, 'sent', p.sent, 'received', p.received,"
    " 'packet_loss', p.packet_loss, 'avg_rtt', p.avg_rtt, 'timestamp', p.timestamp,"
    " 'error', coalesce(p.error, ''), 'node_id', b.node_id, 'received_at', b.received_at,"
    f" 'traceroute', {_TRACE_JSON}, 'file', :file)"
)
_FROM = "FROM ping_results p LEFT JOIN batches b ON b.id = p.batch_id"


def where(
    flt: ResultFilter, *, before_id: int | None = None, ids: tuple[int, int] | None = None
) -> tuple[str, dict[str, Any]]:
    """WHERE text and named parameters for `flt` (and `p.id < before_id`, and
    `after < p.id <= upto` for `ids`)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if flt.ip is not None:
        clauses.append("p.ip = :ip")
        params["ip"] = flt.ip
    if flt.since is not None:
        clauses.append("p.timestamp >= :since")
        params["since"] = flt.since
    if flt.until is not None:
        clauses.append("p.timestamp < :until")
        params["until"] = flt.until
    if flt.failed is not None:
        clauses.append(FAILED if flt.failed else f"NOT {FAILED}")
    if flt.node is not None:
        clauses.append("p.batch_id IN (SELECT id FROM batches WHERE node_id = :node)")
        params["node"] = flt.node
    elif flt.node_is_null:
        clauses.append(
            "(p.batch_id IS NULL OR p.batch_id IN (SELECT id FROM batches WHERE node_id IS NULL))"
        )
    if before_id is not None:
        clauses.append("p.id < :before")
        params["before"] = before_id
    if ids is not None:
        clauses.append("p.id > :after AND p.id <= :upto")
        params["after"], params["upto"] = ids
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def items(flt: ResultFilter, before_id: int | None) -> tuple[str, dict[str, Any]]:
    """(id, item JSON) newest arrival first; bind :file and :limit too."""
    cond, params = where(flt, before_id=before_id)
    # the page's ids first, then the JSON for those only: when SQLite answers the
    # filter from an index in another order (timestamp), it sorts what matched,
    # and it would build every match's JSON before sorting
    page = f"SELECT p.id FROM ping_results p{cond} ORDER BY p.id DESC LIMIT :limit"
    return (
        f"SELECT p.id, {ITEM_JSON} FROM ({page}) AS page JOIN ping_results p ON p.id = page.id"
        " LEFT JOIN batches b ON b.id = p.batch_id ORDER BY p.id DESC",
        params,
    )


def prerendered(flt: ResultFilter, before_id: int | None) -> tuple[str, dict[str, Any]]:
    """(id, item JSON without its closing brace) from the attached side file
    `side` (see prerender.py), newest first; bind :limit too."""
    cond, params = where(flt, before_id=before_id)
    if flt != ResultFilter():
        page = f"SELECT p.id FROM ping_results p{cond} ORDER BY p.id DESC LIMIT :limit"
        return (
            f"SELECT s.id, s.item FROM ({page}) AS page JOIN side.items s ON s.id = page.id"
            " ORDER BY s.id DESC",
            params,
        )
    cond = "" if before_id is None else " WHERE id < :before"
    return f"SELECT id, item FROM side.items{cond} ORDER BY id DESC LIMIT :limit", params


def target_totals(
    flt: ResultFilter, ids: tuple[int, int] | None = None
) -> tuple[str, dict[str, Any]]:
    """Per target: results, failed, sum of packet loss, first and last timestamp,
    and the reporting nodes as JSON values comma-joined (`null` for no node).
    The nodes come in the same pass: a DISTINCT over (target, node) pairs of
    its own took twice as long as this whole statement."""
    cond, params = where(flt, ids=ids)
    return (
        f"SELECT p.ip, count(*), sum({FAILED}), sum(p.packet_loss),"
        " min(p.timestamp), max(p.timestamp), group_concat(DISTINCT json_quote(b.node_id))"
        f" {_FROM}{cond} GROUP BY p.ip",
        params,
    )


def target_rtts(
    flt: ResultFilter, ids: tuple[int, int] | None = None
) -> tuple[str, dict[str, Any]]:
    """Per target: the RTTs of results that got replies, ascending, comma-joined."""
    cond, params = where(flt, ids=ids)
    cond = f"{cond} AND p.received > 0" if cond else " WHERE p.received > 0"
    return (
        "SELECT ip, group_concat(avg_rtt) FROM"
        f" (SELECT p.ip AS ip, p.avg_rtt AS avg_rtt {_FROM}{cond} ORDER BY p.ip, p.avg_rtt)"
        " GROUP BY ip",
        params,
    )


def series_rows(flt: ResultFilter) -> tuple[str, dict[str, Any]]:
    cond, params = where(flt)
    return (
        f"SELECT p.timestamp, p.received, p.packet_loss, p.avg_rtt, {FAILED},"
        f" b.node_id {_FROM}{cond}",
        params,
    )


def route_rows(flt: ResultFilter) -> tuple[str, dict[str, Any]]:
    """(timestamp, node, hops as 'ttl ip timeout' lines) of results with a traceroute."""
    cond, params = where(flt)
    return (
        "SELECT p.timestamp, b.node_id, (SELECT group_concat(coalesce(h.ip, '') || ' ' ||"
        " h.timeout, char(10)) FROM (SELECT ip, timeout FROM traceroute_hops"
        " WHERE traceroute_id = t.id ORDER BY ttl, id) h)"
        f" {_FROM} JOIN traceroute_results t ON t.ping_result_id = p.id{cond}",
        params,
    )


NODE_BATCHES = (
    "SELECT node_id, remote, count(*), min(received_at), max(received_at)"
    " FROM batches GROUP BY node_id, remote"
)
NODE_RESULTS = f"SELECT b.node_id, count(*), sum({FAILED}) {_FROM} GROUP BY b.node_id"
