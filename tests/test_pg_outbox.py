"""The shared hop outbox on a real server: claims are disjoint, leases lapse,
a lapsed owner cannot settle what another instance took over."""

from __future__ import annotations

import asyncio

import pytest

asyncpg = pytest.importorskip("asyncpg")

from output_service.storage.postgres import schema  # noqa: E402
from output_service.storage.postgres.outbox import PgHopOutbox  # noqa: E402
from tests.pg_server import PgDatabase  # noqa: E402

HOPS = [f"203.0.113.{i}" for i in range(1, 21)]


async def _pool_with_hops(pg_db: PgDatabase) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(pg_db.url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await schema.migrate(conn)
        await conn.execute(
            "INSERT INTO hop_outbox (ip, queued_at) SELECT ip, now() FROM unnest($1::text[]) ip",
            HOPS,
        )
    return pool


async def test_concurrent_claims_are_disjoint_and_cover_everything(pg_db: PgDatabase) -> None:
    pool = await _pool_with_hops(pg_db)
    try:
        a, b = PgHopOutbox(pool, 60, "a"), PgHopOutbox(pool, 60, "b")
        got_a, got_b = await asyncio.gather(a.claim(12), b.claim(12))
        ips_a, ips_b = {h.ip for h in got_a}, {h.ip for h in got_b}
        assert not ips_a & ips_b
        assert ips_a | ips_b == set(HOPS)
        assert await a.delivered(got_a) == len(got_a)
        assert await b.dead_letter(got_b, 400, "no thanks") == len(got_b)
        assert await a.depth() == 0
    finally:
        await pool.close()
    assert pg_db.psql("SELECT value FROM counters WHERE name = 'hops_sent'") == str(len(got_a))
    assert pg_db.psql("SELECT count(*) FROM hop_dead_letters") == str(len(got_b))


async def test_a_lapsed_claim_is_taken_over_and_its_owner_settles_nothing(
    pg_db: PgDatabase,
) -> None:
    pool = await _pool_with_hops(pg_db)
    try:
        dead = PgHopOutbox(pool, 1, "dead-instance")
        alive = PgHopOutbox(pool, 60, "alive")
        claimed = await dead.claim(100)
        assert len(claimed) == len(HOPS)
        assert await alive.claim(100) == []  # still leased
        # lapse the lease as time would (no sleep): the claim ends in the past
        await pool.execute("UPDATE hop_outbox SET claimed_until = now() - interval '1 second'")
        taken = await alive.claim(100)
        assert {h.ip for h in taken} == set(HOPS)
        assert all(h.attempts == 2 for h in taken)
        assert await dead.renew(claimed) == []  # too late to keep them
        assert await dead.delivered(claimed) == 0  # nor to settle them: alive owns them now
        assert len(await alive.renew(taken)) == len(HOPS)
        assert await alive.delivered(taken) == len(HOPS)
        await alive.release(taken)  # nothing left to release: no error
    finally:
        await pool.close()


async def test_released_hops_are_claimable_at_once(pg_db: PgDatabase) -> None:
    pool = await _pool_with_hops(pg_db)
    try:
        a, b = PgHopOutbox(pool, 60, "a"), PgHopOutbox(pool, 60, "b")
        claimed = await a.claim(5)
        await a.release(claimed)
        again = await b.claim(5)
        assert [h.ip for h in again] == [h.ip for h in claimed]
    finally:
        await pool.close()
