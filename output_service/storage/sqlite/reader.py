"""Read queries for the operator endpoints, on their own read-only connections.

WAL lets these run while the writer commits; they never take the write lock.
A connection is opened per query: operator endpoints are rare, and a fresh
connection can never point at a file that rotation has since replaced.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite

from output_service.models import hops_were_null
from output_service.storage.sqlite import connect

_RECENT = (
    "SELECT p.id, p.ip, p.sent, p.received, p.packet_loss, p.avg_rtt, p.timestamp, p.error,"
    " b.node_id, b.received_at, p.raw FROM ping_results p LEFT JOIN batches b ON b.id = p.batch_id"
)


@contextlib.asynccontextmanager
async def read_only(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A connection that cannot write, however it is used."""
    async with connect.read_only_async(path) as conn:
        yield conn


async def answers(path: Path) -> bool:
    """True when the file opens and answers a query."""
    async with read_only(path) as conn, conn.execute("SELECT count(*) FROM batches") as cur:
        return await cur.fetchone() is not None


async def recent_results(path: Path, limit: int, ip: str | None) -> list[dict[str, Any]]:
    """The newest results (by arrival), each with its traceroute and hops."""
    where, params = ("WHERE p.ip = ?", [ip]) if ip else ("", [])
    async with read_only(path) as conn:
        async with conn.execute(
            f"{_RECENT} {where} ORDER BY p.id DESC LIMIT ?", (*params, limit)
        ) as cur:
            rows = list(await cur.fetchall())
        results: dict[int, dict[str, Any]] = {}
        for row in rows:
            results[row[0]] = {
                "id": row[0],
                "ip": row[1],
                "sent": row[2],
                "received": row[3],
                "packet_loss": row[4],
                "avg_rtt": row[5],
                "timestamp": row[6],
                "error": row[7] or None,
                "node_id": row[8],
                "received_at": row[9],
                "traceroute": None,
            }
        if not results:
            return []
        traces = await _traceroutes(conn, list(results))
        for ping_id, trace in traces.items():
            results[ping_id]["traceroute"] = trace
        for row in rows:  # `"hops": null` as sent is kept in raw (models.decode_batch)
            trace = traces.get(row[0])
            if row[10] and trace is not None and not trace["hops"] and hops_were_null(row[10]):
                trace["hops"] = None
    return list(results.values())


async def _traceroutes(conn: aiosqlite.Connection, ping_ids: list[int]) -> dict[int, Any]:
    marks = ",".join("?" * len(ping_ids))
    by_trace: dict[int, dict[str, Any]] = {}
    by_ping: dict[int, dict[str, Any]] = {}
    async with conn.execute(
        "SELECT id, ping_result_id, method, completed, error FROM traceroute_results"
        f" WHERE ping_result_id IN ({marks})",
        ping_ids,
    ) as cur:
        async for tid, pid, method, completed, error in cur:
            trace = {
                "method": method,
                "completed": bool(completed),
                "error": error or None,
                "hops": [],
            }
            by_trace[tid] = by_ping[pid] = trace
    if by_trace:
        marks = ",".join("?" * len(by_trace))
        async with conn.execute(
            "SELECT traceroute_id, ttl, ip, rtt, timeout FROM traceroute_hops"
            f" WHERE traceroute_id IN ({marks}) ORDER BY traceroute_id, ttl, id",
            list(by_trace),
        ) as cur:
            async for tid, ttl, hop_ip, rtt, timeout in cur:
                by_trace[tid]["hops"].append(
                    {"ttl": ttl, "ip": hop_ip or "", "rtt": rtt, "timeout": bool(timeout)}
                )
    return by_ping
