"""/api/hops on PostgreSQL, in the reply shape of the SQLite backend's state.db
listing (`hops.state.listing`): discovered hops by address with when each was last
queued and whether it is waiting, dead-lettered or delivered; the outbox depth;
the newest dead letters with the input service's reply."""

from __future__ import annotations

from typing import Any

from output_service.storage.postgres.connection import Conn
from output_service.storage.postgres.queries import UTC_TEXT

DEAD_LETTERS_SHOWN = 100

_HOPS = (
    f"SELECT s.ip, {UTC_TEXT.format('s.queued_at')} AS queued,"
    " EXISTS (SELECT 1 FROM hop_outbox o WHERE o.ip = s.ip) AS waiting,"
    " EXISTS (SELECT 1 FROM hop_dead_letters d WHERE d.ip = s.ip) AS dead"
    " FROM hops_seen s ORDER BY s.ip LIMIT $1 OFFSET $2"
)
_DEAD = (
    f"SELECT ip, {UTC_TEXT.format('queued_at')} AS queued, {UTC_TEXT.format('dead_at')} AS failed,"
    " status, response FROM hop_dead_letters ORDER BY dead_at DESC, ip LIMIT $1"
)
_COUNTS = (
    "SELECT (SELECT count(*) FROM hops_seen), (SELECT count(*) FROM hop_outbox),"
    " (SELECT count(*) FROM hop_dead_letters)"
)


async def hop_listing(conn: Conn, limit: int, offset: int, limit_s: float) -> dict[str, Any]:
    """The three statements see one snapshot: the counts agree with the rows."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_HOPS, limit + 1, offset, timeout=limit_s)
        dead = await conn.fetch(_DEAD, DEAD_LETTERS_SHOWN, timeout=limit_s)
        counts = await conn.fetchrow(_COUNTS, timeout=limit_s)
    assert counts is not None  # a SELECT without FROM returns one row
    discovered, depth, dead_total = counts
    return {
        "discovered": int(discovered),
        "outbox_depth": int(depth),
        "hops": [
            {
                "ip": r["ip"],
                "last_queued": r["queued"],
                "waiting": r["waiting"],
                "dead_lettered": r["dead"],
                "delivered": not r["waiting"] and not r["dead"],
            }
            for r in rows[:limit]
        ],
        "dead_letters_total": int(dead_total),
        "dead_letters": [
            {
                "ip": r["ip"],
                "queued_at": r["queued"],
                "failed_at": r["failed"],
                "status": r["status"],
                "response": r["response"],
            }
            for r in dead
        ],
        "next_offset": offset + limit if len(rows) > limit else None,
    }
