"""The PostgreSQL schema against a real server: migrations once under concurrency,
partitions ahead of time, retention by dropping partitions."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

asyncpg = pytest.importorskip("asyncpg")

from output_service.storage.postgres import schema  # noqa: E402
from tests.pg_server import PgDatabase  # noqa: E402

DAY = dt.timedelta(days=1)


async def test_two_instances_starting_together_migrate_once(pg_db: PgDatabase) -> None:
    conns = [await asyncpg.connect(pg_db.url) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(schema.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    every = list(range(1, schema.SCHEMA_VERSION + 1))
    assert sorted(applied, key=len) == [[], every]
    assert pg_db.psql("SELECT version FROM schema_migrations ORDER BY 1").split() == [
        str(v) for v in every
    ]
    # a third start applies nothing and fails nothing
    conn = await asyncpg.connect(pg_db.url)
    try:
        assert await schema.migrate(conn) == []
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused(pg_db: PgDatabase) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        await schema.migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (99)")
        with pytest.raises(schema.SchemaError, match="99"):
            await schema.migrate(conn)
    finally:
        await conn.close()


async def test_partitions_ahead_and_retention_drops_whole_partitions(pg_db: PgDatabase) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        await schema.migrate(conn)
        then = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
        created = await schema.ensure_partitions(conn, then, days=1, ahead=2)
        assert len(created) == 9  # three days, three tables
        assert await schema.ensure_partitions(conn, then, days=1, ahead=2) == []
        parts = await schema.partitions(conn)
        assert [p.start.date() for p in parts] == [
            dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
        ]  # fmt: skip
        # one result on 1 March, one on 3 March (with a traceroute and a hop each)
        for pid, day in ((1, then), (2, then + 2 * DAY)):
            await conn.execute(
                "INSERT INTO batches (id, received_at, result_count) VALUES ($1, $2, 1)", pid, day
            )
            await conn.execute(
                "INSERT INTO ping_results (id, received_at, ip, sent, received, packet_loss,"
                " avg_rtt, timestamp, batch_id) VALUES ($1, $2, '10.0.0.1', 1, 1, 0, 5,"
                " '2026-03-01T00:00:00.000000000Z', $1)",
                pid,
                day,
            )
            await conn.execute(
                "INSERT INTO traceroute_results (id, received_at, ping_result_id)"
                " VALUES ($1, $2, $1)",
                pid,
                day,
            )
            await conn.execute(
                "INSERT INTO traceroute_hops (received_at, traceroute_id, ttl, ip)"
                " VALUES ($1, $2, 1, '10.9.9.9')",
                day,
                pid,
            )
        # seven days kept, it is now 9 March 13:00: only 1 March has ended before 2 March 13:00
        dropped = await schema.drop_expired(conn, then + 8 * DAY + dt.timedelta(hours=1), 7)
        assert sorted(dropped) == sorted(f"{t}_p20260301_0000" for t in schema.PARTITIONED)
    finally:
        await conn.close()
    # read back with psql, a client separate from the service's driver
    for table in schema.PARTITIONED:
        assert pg_db.psql(f"SELECT count(*) FROM {table}") == "1"
    assert pg_db.psql("SELECT id FROM ping_results") == "2"
    assert pg_db.psql("SELECT id FROM batches") == "2"


async def test_a_partition_gets_its_hop_ip_index_once_its_interval_is_over(
    pg_db: PgDatabase,
) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        await schema.migrate(conn)
        then = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
        await schema.ensure_partitions(conn, then, days=1, ahead=1)
        assert await schema.seal_partitions(conn, then) == []  # 1 March still takes rows
        built = await schema.seal_partitions(conn, then + DAY)
        assert built == ["traceroute_hops_p20260301_0000_ip_idx"]
        assert await schema.seal_partitions(conn, then + DAY) == []
    finally:
        await conn.close()
    assert pg_db.psql(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'traceroute_hops_p20260301_0000_ip_idx'"
    ).endswith("USING btree (ip)")
