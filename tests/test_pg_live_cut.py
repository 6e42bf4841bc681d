"""The live cut's check on PostgreSQL without reading the live partition (schema version
4): the writers' kept count of results per hour of arrival equals a count of the rows
themselves, after ingest on two instances, retried keys and the migration of a
database that already holds rows, and goes with the partitions retention drops.

Every expected number is read back with psql (a client separate from the service's
driver) as a plain COUNT(*) over the stored rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

asyncpg = pytest.importorskip("asyncpg")

from output_service.storage.postgres import schema  # noqa: E402
from tests.conftest import StartService  # noqa: E402
from tests.pg_load import results  # noqa: E402
from tests.pg_server import PgDatabase  # noqa: E402
from tests.test_pg_store import pg  # noqa: E402

PER_HOUR_KEPT = "SELECT bucket, sum(rows) FROM arrival_counts GROUP BY 1 ORDER BY 1"
PER_HOUR_ROWS = (
    "SELECT date_trunc('hour', received_at, 'UTC'), count(*) FROM ping_results"
    " GROUP BY 1 ORDER BY 1"
)


async def test_the_kept_count_equals_the_rows_stored_by_two_instances(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    one = await start_service(**pg(pg_db.url))
    two = await start_service(**pg(pg_db.url))
    keyed = json.dumps(results(7)).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "kept-1"}
    replies = await asyncio.gather(
        *(s.results.post("/results", json=results(n)) for s, n in ((one, 3), (two, 4), (one, 5))),
        # one key sent to both at once and again: stored once, counted once
        *(s.results.post("/results", data=keyed, headers=headers) for s in (one, two, two)),
    )
    assert [r.status for r in replies] == [200] * 6
    assert pg_db.psql("SELECT count(*) FROM ping_results") == "19"
    assert pg_db.psql(PER_HOUR_KEPT) == pg_db.psql(PER_HOUR_ROWS)
    # one row per hour and writing backend, never one per transaction
    writers = int(pg_db.psql("SELECT count(*) FROM arrival_counts"))
    backends = int(pg_db.psql("SELECT count(DISTINCT writer) FROM arrival_counts"))
    assert writers == backends * int(
        pg_db.psql("SELECT count(DISTINCT bucket) FROM arrival_counts")
    )


async def test_the_migration_counts_the_rows_already_stored(pg_db: PgDatabase) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        async with conn.transaction():  # a database at version 3, as the last release left it
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version in (1, 2, 3):
                await conn.execute(schema.MIGRATIONS[version])
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        at = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
        await schema.ensure_partitions(conn, at, days=1, ahead=1)
        for i, moment in enumerate([at, at, at + dt.timedelta(hours=1), at + dt.timedelta(days=1)]):
            await conn.execute(
                "INSERT INTO ping_results (id, received_at, ip, sent, received, packet_loss,"
                " avg_rtt, timestamp) VALUES ($1, $2, '10.0.0.1', 1, 1, 0, 5, 't')",
                i + 1,
                moment,
            )
        assert await schema.migrate(conn) == [4]
    finally:
        await conn.close()
    assert pg_db.psql(PER_HOUR_KEPT) == pg_db.psql(PER_HOUR_ROWS)
    assert pg_db.psql("SELECT sum(rows) FROM arrival_counts") == "4"
    # the arrival index exists on every partition, old ones included
    assert pg_db.psql(
        "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'ping_results_p%'"
        " AND indexdef LIKE '%(received_at)'"
    ) == pg_db.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ping_results'::regclass")


async def test_retention_drops_the_kept_counts_of_dropped_hours(pg_db: PgDatabase) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        await schema.migrate(conn)
        now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
        await schema.ensure_partitions(conn, now - dt.timedelta(days=5), days=1, ahead=6)
        buckets = [now - dt.timedelta(days=5), now - dt.timedelta(days=1), now]
        for n, bucket in enumerate(buckets, start=1):
            await conn.execute(
                "INSERT INTO arrival_counts (bucket, writer, rows) VALUES ($1, 1, $2)", bucket, n
            )
        dropped = await schema.drop_expired(conn, now, retention_days=3)
        # the days ending by 12:00 three days ago: 5 and 6 March, in each of the three tables
        assert sorted({name.rsplit("_p", 1)[1] for name in dropped}) == [
            "20260305_0000",
            "20260306_0000",
        ]
        kept = await conn.fetch("SELECT bucket, rows FROM arrival_counts ORDER BY bucket")
    finally:
        await conn.close()
    assert [(r["bucket"], r["rows"]) for r in kept] == [(buckets[1], 2), (buckets[2], 3)]
