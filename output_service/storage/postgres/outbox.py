"""The shared hop outbox: any instance may deliver, each hop claimed by one.

`claim` takes the oldest unclaimed hops with `FOR UPDATE SKIP LOCKED` (two
instances claiming at once get disjoint sets without waiting on each other) and
stamps them with a lease. A hop leaves the outbox only by `delivered` or
`dead_letter`; an instance that dies mid-delivery just lets its lease lapse, and
another instance claims the hop again (delivered at least once, never lost).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from typing import Any

import asyncpg

from output_service.storage.seam import WaitingHop

_CLAIM = (
    "UPDATE hop_outbox o SET claimed_by = $1, claimed_until = now() + $3::interval,"
    " attempts = o.attempts + 1"
    " WHERE o.ip IN (SELECT ip FROM hop_outbox"
    "  WHERE claimed_until IS NULL OR claimed_until < now()"
    "  ORDER BY queued_at, ip LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " RETURNING o.ip, o.queued_at, o.attempts"
)


def instance_id() -> str:
    """Who holds a claim: host and pid, readable in the table by an operator."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class PgHopOutbox:
    """HopOutbox on the shared database."""

    def __init__(self, pool: asyncpg.Pool, lease_s: float, owner: str | None = None) -> None:
        self._pool = pool
        self._lease = dt.timedelta(seconds=lease_s)
        self.owner = owner or instance_id()

    async def claim(self, limit: int) -> list[WaitingHop]:
        rows = await self._pool.fetch(_CLAIM, self.owner, limit, self._lease)
        return sorted(
            (WaitingHop(r["ip"], r["queued_at"].timestamp(), r["attempts"]) for r in rows),
            key=lambda h: (h.queued_at, h.ip),
        )

    async def renew(self, hops: Sequence[WaitingHop]) -> list[WaitingHop]:
        """Extend the lease of hops still held (a sender retrying a failed POST);
        the ones another instance took over after a lapse are left out."""
        rows = await self._pool.fetch(
            "UPDATE hop_outbox SET claimed_until = now() + $3::interval"
            " WHERE ip = ANY($1::text[]) AND claimed_by = $2 RETURNING ip",
            [h.ip for h in hops],
            self.owner,
            self._lease,
        )
        held = {r["ip"] for r in rows}
        return [h for h in hops if h.ip in held]

    async def delivered(self, hops: Sequence[WaitingHop]) -> int:
        """Remove hops the input service took; counts them in the shared total.
        A claim that lapsed and was taken over is left to its new owner."""
        async with self._pool.acquire() as conn, conn.transaction():
            gone = await conn.fetch(
                "DELETE FROM hop_outbox WHERE ip = ANY($1::text[]) AND claimed_by = $2"
                " RETURNING ip",
                [h.ip for h in hops],
                self.owner,
            )
            await conn.execute(
                "UPDATE counters SET value = value + $1 WHERE name = 'hops_sent'", len(gone)
            )
        return len(gone)

    async def dead_letter(self, hops: Sequence[WaitingHop], status: int, response: str) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            gone = await conn.fetch(
                "DELETE FROM hop_outbox WHERE ip = ANY($1::text[]) AND claimed_by = $2"
                " RETURNING ip, queued_at",
                [h.ip for h in hops],
                self.owner,
            )
            await conn.executemany(
                "INSERT INTO hop_dead_letters (ip, queued_at, status, response)"
                " VALUES ($1, $2, $3, $4)",
                [(r["ip"], r["queued_at"], status, response[:2000]) for r in gone],
            )
            await conn.execute(
                "UPDATE counters SET value = value + $1 WHERE name = 'hops_dead_lettered'",
                len(gone),
            )
        return len(gone)

    async def release(self, hops: Sequence[WaitingHop]) -> None:
        await self._pool.execute(
            "UPDATE hop_outbox SET claimed_by = NULL, claimed_until = NULL"
            " WHERE ip = ANY($1::text[]) AND claimed_by = $2",
            [h.ip for h in hops],
            self.owner,
        )

    async def depth(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM hop_outbox"))

    async def listing(self, limit: int, offset: int) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            waiting = await conn.fetch(
                "SELECT ip, queued_at, attempts FROM hop_outbox ORDER BY queued_at, ip"
                " LIMIT $1 OFFSET $2",
                limit,
                offset,
            )
            dead = await conn.fetch(
                "SELECT ip, status, response, dead_at FROM hop_dead_letters"
                " ORDER BY dead_at DESC LIMIT $1",
                limit,
            )
            discovered = await conn.fetchval("SELECT count(*) FROM hops_seen")
            depth = await conn.fetchval("SELECT count(*) FROM hop_outbox")
        return {
            "discovered": int(discovered),
            "outbox_depth": int(depth),
            "waiting": [
                {"ip": r["ip"], "queued_at": _text(r["queued_at"]), "attempts": r["attempts"]}
                for r in waiting
            ],
            "dead_letters": [
                {
                    "ip": r["ip"],
                    "status": r["status"],
                    "response": r["response"],
                    "at": _text(r["dead_at"]),
                }
                for r in dead
            ],
        }


def _text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
