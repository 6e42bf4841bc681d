"""/recent on PostgreSQL: the newest results by arrival, in /recent's own item shape
(as the SQLite `Storage.recent` gives it: `error` null when none, hops by TTL),
which differs a little from the query API's items."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from output_service.storage.postgres.connection import Conn
from output_service.storage.seam import utc_text

_RECENT = (
    "SELECT p.id, p.ip, p.sent, p.received, p.packet_loss, p.avg_rtt, p.timestamp, p.error,"
    " b.node_id, p.received_at FROM ping_results p LEFT JOIN batches b ON b.id = p.batch_id"
)


async def recent(conn: Conn, limit: int, ip: str | None, limit_s: float) -> list[dict[str, Any]]:
    """Ids grow with arrival on every instance (within the sequence's cache)."""
    where, params = ("WHERE p.ip = $2", [ip]) if ip else ("", [])
    rows = await conn.fetch(
        f"{_RECENT} {where} ORDER BY p.id DESC LIMIT $1", limit, *params, timeout=limit_s
    )
    results = {r["id"]: _result(r) for r in rows}
    if results:
        await _attach_traceroutes(conn, results)
    return list(results.values())


def _result(r: asyncpg.Record) -> dict[str, Any]:
    received_at: dt.datetime = r["received_at"]
    return {
        "id": r["id"],
        "ip": r["ip"],
        "sent": r["sent"],
        "received": r["received"],
        "packet_loss": r["packet_loss"],
        "avg_rtt": r["avg_rtt"],
        "timestamp": r["timestamp"],
        "error": r["error"] or None,
        "node_id": r["node_id"],
        "received_at": utc_text(received_at.timestamp()),
        "traceroute": None,
    }


async def _attach_traceroutes(conn: Any, results: dict[int, dict[str, Any]]) -> None:
    ids = list(results)
    traces = await conn.fetch(
        "SELECT id, method, completed, error FROM traceroute_results WHERE id = ANY($1::bigint[])",
        ids,
    )
    for t in traces:
        results[t["id"]]["traceroute"] = {
            "method": t["method"],
            "completed": t["completed"],
            "error": t["error"] or None,
            "hops": [],
        }
    if not traces:
        return
    hops = await conn.fetch(
        "SELECT traceroute_id, ttl, ip, rtt, timeout FROM traceroute_hops"
        " WHERE traceroute_id = ANY($1::bigint[]) ORDER BY traceroute_id, ttl, id",
        [t["id"] for t in traces],
    )
    for h in hops:
        results[h["traceroute_id"]]["traceroute"]["hops"].append(
            {"ttl": h["ttl"], "ip": h["ip"] or "", "rtt": h["rtt"], "timeout": h["timeout"]}
        )
