"""Reads on PostgreSQL: /recent's shape, from the shared tables.

Every read takes a connection from the instance's pool for one statement or
two, with a statement timeout (the pool's command_timeout), so a read never
holds a snapshot long. The query API's reads (targets, series, routes, nodes)
use the backend-neutral helpers of the insight work once they are on main;
until then they answer BadQuery naming what is missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from output_service.storage.files import utc_text
from output_service.storage.seam import (
    BadQuery,
    ResultFilter,
    ResultPage,
    SeriesQuery,
    TargetQuery,
)

_RECENT = (
    "SELECT p.id, p.ip, p.sent, p.received, p.packet_loss, p.avg_rtt, p.timestamp, p.error,"
    " b.node_id, p.received_at FROM ping_results p LEFT JOIN batches b ON b.id = p.batch_id"
)
_NOT_YET = "not available on the postgres backend yet"


class PgReads:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        """The newest results by arrival (ids grow with arrival on every instance,
        within the sequence's cache), each with its traceroute and hops."""
        where, params = ("WHERE p.ip = $2", [ip]) if ip else ("", [])
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(
                f"{_RECENT} {where} ORDER BY p.id DESC LIMIT $1", limit, *params
            )
            results = {r["id"]: _result(r) for r in rows}
            if results:
                await _attach_traceroutes(conn, results)
        return list(results.values())

    async def results_page(self, flt: ResultFilter, limit: int, cursor: str | None) -> ResultPage:
        raise BadQuery(f"/api/results is {_NOT_YET}")

    def iter_results(self, flt: ResultFilter) -> AsyncIterator[dict[str, Any]]:
        raise BadQuery(f"export is {_NOT_YET}")

    async def targets(self, query: TargetQuery) -> list[dict[str, Any]]:
        raise BadQuery(f"/api/targets is {_NOT_YET}")

    async def target(self, query: SeriesQuery) -> dict[str, Any] | None:
        raise BadQuery(f"/api/targets/{{ip}} is {_NOT_YET}")

    async def routes(self, ip: str, flt: ResultFilter) -> dict[str, Any]:
        raise BadQuery(f"/api/routes is {_NOT_YET}")

    async def nodes(self, silent_after_s: float, now: float) -> list[dict[str, Any]]:
        raise BadQuery(f"/api/nodes is {_NOT_YET}")


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
