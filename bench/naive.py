"""The naive design, as a baseline: json.loads and one aiosqlite transaction per request.

Not a straw man: same schema and PRAGMAs as the service, hand validation of
every field, ids assigned from counters and one `executemany` per table. What
it lacks is what the service is built around: msgspec decoding, a writer thread
with group commit. Requests take turns on the one connection (an asyncio lock).

    python -m bench.naive --db-dir DIR   (prints a "listening" JSON line)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
from aiohttp import web

from bench.ceiling import open_db
from bench.listen import serve_until_sigterm

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
DB = web.AppKey("db", aiosqlite.Connection)
LOCK = web.AppKey("lock", asyncio.Lock)
IDS = web.AppKey("ids", list)


def validate(item: Any) -> str | None:
    """The field checks a hand-written handler would make; the first problem or None."""
    if not isinstance(item, dict):
        return "not an object"
    try:
        ipaddress.ip_address(item["ip"])
    except (KeyError, ValueError, TypeError):
        return "ip"
    for key in ("sent", "received", "avg_rtt"):
        if not isinstance(item.get(key), int) or item[key] < 0:
            return key
    if not isinstance(item.get("packet_loss"), int | float):
        return "packet_loss"
    if not isinstance(item.get("timestamp"), str) or not TIMESTAMP.fullmatch(item["timestamp"]):
        return "timestamp"
    trace = item.get("traceroute")
    if trace is not None:
        if not isinstance(trace, dict) or not isinstance(trace.get("hops", []), list):
            return "traceroute"
        for hop in trace.get("hops", []):
            if not isinstance(hop, dict) or not isinstance(hop.get("ttl"), int):
                return "traceroute.hops"
    return None


async def post_results(request: web.Request) -> web.Response:
    try:
        data = json.loads(await request.read())
    except ValueError:
        return web.json_response({"status": "error", "error": "malformed JSON"}, status=400)
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        problem = validate(item)
        if problem:
            return web.json_response(
                {"status": "error", "error": f"item {index}: {problem}"}, status=400
            )
    db, ids = request.app[DB], request.app[IDS]
    async with request.app[LOCK]:
        ping_id, trace_id, batch_id = ids
        pings: list[Any] = []
        traces: list[Any] = []
        hops: list[Any] = []
        for r in items:
            pings.append(
                (
                    ping_id,
                    r["ip"],
                    r["sent"],
                    r["received"],
                    r["packet_loss"],
                    r["avg_rtt"],
                    r["timestamp"],
                    r.get("error") or None,
                    batch_id,
                    None,
                )
            )
            t = r.get("traceroute")
            if t:
                traces.append(
                    (
                        trace_id,
                        ping_id,
                        t.get("method"),
                        t.get("completed", False),
                        t.get("error") or None,
                    )
                )
                hops.extend(
                    (trace_id, h["ttl"], h.get("ip") or None, h.get("rtt"), h.get("timeout", False))
                    for h in t.get("hops", [])
                )
                trace_id += 1
            ping_id += 1
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "INSERT INTO batches (id, received_at, remote, result_count) VALUES (?, ?, ?, ?)",
                (batch_id, "2026-01-01T00:00:00Z", request.remote, len(items)),
            )
            await db.executemany(
                "INSERT INTO ping_results (id, ip, sent, received, packet_loss, avg_rtt,"
                " timestamp, error, batch_id, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                pings,
            )
            await db.executemany(
                "INSERT INTO traceroute_results (id, ping_result_id, method, completed, error)"
                " VALUES (?, ?, ?, ?, ?)",
                traces,
            )
            await db.executemany(
                "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt, timeout)"
                " VALUES (?, ?, ?, ?, ?)",
                hops,
            )
            await db.commit()
        except sqlite3.Error:
            await db.rollback()
            raise
        ids[:] = [ping_id, trace_id, batch_id + 1]
    return web.json_response({"status": "ok", "received": len(items)})


async def serve(db_dir: Path) -> None:
    db_dir.mkdir(parents=True, exist_ok=True)
    path = db_dir / "naive.db"
    open_db(path).close()  # schema and the persistent PRAGMA (WAL)
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("PRAGMA cache_size=-65536")
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[DB], app[LOCK], app[IDS] = db, asyncio.Lock(), [1, 1, 1]
    app.router.add_post("/results", post_results)
    await serve_until_sigterm(app)
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="naive baseline server")
    parser.add_argument("--db-dir", type=Path, required=True)
    asyncio.run(serve(parser.parse_args().db_dir))


if __name__ == "__main__":
    main()
