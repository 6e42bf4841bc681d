"""The PostgreSQL backend in the real app on real sockets, against a real server:
ingest, keys shared by instances, the missing archive routes, secrets, outages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from structlog.testing import capture_logs

asyncpg = pytest.importorskip("asyncpg")

from tests.conftest import StartService  # noqa: E402
from tests.pg_load import results  # noqa: E402
from tests.pg_server import PgDatabase, PgServer  # noqa: E402

SECRET = "hunter2-s3cret"


def pg(url: str, **more: Any) -> dict[str, Any]:
    return {"storage": "postgres", "database_url": url, **more}


async def test_ingest_stores_rows_and_health_shows_totals(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    service = await start_service(**pg(pg_db.url))
    reply = await service.results.post("/results", json=results(8))
    assert reply.status == 200
    assert await reply.json() == {"status": "ok", "received": 8}
    assert pg_db.psql("SELECT count(*) FROM ping_results") == "8"
    assert pg_db.psql("SELECT count(*) FROM traceroute_results") == "8"
    assert pg_db.psql("SELECT count(*) FROM traceroute_hops") == "16"
    assert pg_db.psql("SELECT count(*) FROM ping_results WHERE received = 0") == "2"
    assert pg_db.psql("SELECT DISTINCT timestamp FROM ping_results") == (
        "2026-03-01T10:00:00.123456789Z"
    )
    stats: dict[str, Any] = {}

    async def totals_shown() -> bool:
        nonlocal stats
        stats = await (await service.health.get("/stats")).json()
        return bool(stats["total_results"] == 8)

    for _ in range(300):  # refreshed each second; bounded
        if await totals_shown():
            break
        await asyncio.sleep(0.05)
    assert stats["total_results"] == 8
    assert stats["failed_pings"] == 2 and stats["successful_pings"] == 6
    recent = await (await service.health.get("/recent?limit=3")).json()
    assert isinstance(recent, list) and len(recent) == 3
    assert recent[0]["traceroute"]["hops"][1]["ip"] == "198.51.100.2"


async def test_a_key_retried_on_another_instance_is_stored_once(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    one = await start_service(**pg(pg_db.url))
    two = await start_service(**pg(pg_db.url))
    body = json.dumps(results(5)).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "batch-1"}
    first = await one.results.post("/results", data=body, headers=headers)
    again = await two.results.post("/results", data=body, headers=headers)
    assert (first.status, again.status) == (200, 200)
    assert await again.json() == {"status": "ok", "received": 5}
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await two.results.post(
        "/results", json=results(2), headers={"Idempotency-Key": "batch-1"}
    )
    assert other.status == 422
    # the same new key on both at the same moment: stored once, both answered 200
    headers["Idempotency-Key"] = "batch-2"
    replies = await asyncio.gather(
        *(s.results.post("/results", data=body, headers=headers) for s in (one, two, one, two))
    )
    assert [r.status for r in replies] == [200] * 4
    assert pg_db.psql("SELECT count(*) FROM ping_results") == "10"
    assert pg_db.psql("SELECT count(*) FROM batches") == "2"


async def test_archive_routes_are_404_naming_the_reason(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    service = await start_service(**pg(pg_db.url))
    for method, path in (("POST", "/rotate"), ("GET", "/dump"), ("GET", "/files")):
        reply = await service.results.request(method, path)
        assert reply.status == 404
        assert "pg_dump" in (await reply.json())["error"]


async def test_the_password_is_never_in_logs_errors_or_health(
    start_service: StartService, pg_db: PgDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_db.server.url(pg_db.name, password=SECRET)  # trust auth: accepted, unused
    with capture_logs() as logs:
        service = await start_service(**pg(url))
        assert (await service.results.post("/results", json=results(1))).status == 200
        health = await (await service.health.get("/health")).text()
    assert SECRET not in health
    assert SECRET not in repr(logs)
    assert SECRET not in repr(service.services.config)


def test_an_unreachable_database_at_start_up_is_one_line_and_exit_2(pg_server: PgServer) -> None:
    gone = f"postgresql://postgres:{SECRET}@/x?host={pg_server.base}/nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "output_service", "--storage=postgres", "--port=0",
         "--health-port=0", "--host=127.0.0.1", "--input-url="],
        env={**os.environ, "OUTPUT_SERVICE_DATABASE_URL": gone},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("output-service: database_url: cannot use the database")
    assert done.stderr.count("\n") == 1
    assert SECRET not in done.stderr + done.stdout


async def test_database_lost_then_back_503_then_ingest_by_itself(
    start_service: StartService, own_pg_server: PgServer
) -> None:
    own_pg_server.create_database("lost")
    service = await start_service(**pg(own_pg_server.url("lost")))
    assert (await service.results.post("/results", json=results(3))).status == 200
    await asyncio.to_thread(own_pg_server.stop)
    refused = await service.results.post("/results", json=results(3, base=3))
    assert refused.status == 503
    assert refused.headers["Retry-After"]
    assert "nothing stored" in (await refused.json())["error"]
    assert (await service.health.get("/ready")).status == 503
    await asyncio.to_thread(own_pg_server.start)
    statuses: list[int] = []

    async def stored_again() -> bool:
        reply = await service.results.post("/results", json=results(3, base=6))
        statuses.append(reply.status)
        return reply.status == 200

    for _ in range(200):
        if await stored_again():
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == 200, statuses
    assert set(statuses) <= {200, 503}
    assert (await service.health.get("/ready")).status == 200
    assert own_pg_server.psql("SELECT count(*) FROM ping_results", "lost") == "6"


async def test_hops_are_queued_once_across_instances(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    # the feedback loop on, pointing at a port nobody listens on: hops stay queued
    from tests.hops_input import free_port

    url = f"http://127.0.0.1:{free_port()}/hops"
    one = await start_service(**pg(pg_db.url), input_url=url, hops_flush_interval_s=60.0)
    two = await start_service(**pg(pg_db.url), input_url=url, hops_flush_interval_s=60.0)
    replies = await asyncio.gather(
        one.results.post("/results", json=results(4, hops=3)),
        two.results.post("/results", json=results(4, base=10, hops=3)),
    )
    assert [r.status for r in replies] == [200, 200]
    assert pg_db.psql("SELECT count(*) FROM hop_outbox") == "3"
    assert pg_db.psql("SELECT count(*) FROM hops_seen") == "3"


async def test_start_up_drops_partitions_past_retention(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    import datetime as dt

    from output_service.storage.postgres import schema

    conn = await asyncpg.connect(pg_db.url)
    try:
        await schema.migrate(conn)
        old = dt.datetime(2020, 1, 1, 6, tzinfo=dt.UTC)
        await schema.ensure_partitions(conn, old, days=1, ahead=1)
        await conn.execute(
            "INSERT INTO batches (id, received_at, result_count) VALUES (-1, $1, 1)", old
        )
        await conn.execute(
            "INSERT INTO ping_results (id, received_at, ip, sent, received, packet_loss,"
            " avg_rtt, timestamp, batch_id) VALUES (-1, $1, '10.0.0.1', 1, 1, 0, 5,"
            " '2020-01-01T06:00:00.000000000Z', -1)",
            old,
        )
    finally:
        await conn.close()
    service = await start_service(**pg(pg_db.url), retention_days=30)
    assert (await service.results.post("/results", json=results(2))).status == 200
    names = pg_db.psql(
        "SELECT string_agg(c.relname, ',') FROM pg_inherits i JOIN pg_class c"
        " ON c.oid = i.inhrelid WHERE i.inhparent = 'ping_results'::regclass"
    )
    assert "ping_results_p20200101_0000" not in names
    assert "ping_results_p20200102_0000" not in names
    assert pg_db.psql("SELECT count(*) FROM ping_results") == "2"
    assert pg_db.psql("SELECT count(*) FROM batches WHERE id = -1") == "0"


async def test_a_batch_the_database_refuses_fails_alone(
    start_service: StartService, pg_db: PgDatabase
) -> None:
    service = await start_service(**pg(pg_db.url))
    # an operator's constraint stands in for any row the database refuses
    pg_db.psql("ALTER TABLE ping_results ADD CONSTRAINT no_poison CHECK (ip <> '10.66.66.66')")
    poison = results(1)
    poison[0]["ip"] = "10.66.66.66"
    bodies = [results(3, base=10 * i) for i in range(8)]
    bodies.insert(4, poison)
    replies = await asyncio.gather(*(service.results.post("/results", json=b) for b in bodies))
    statuses = [r.status for r in replies]
    assert statuses == [200] * 4 + [503] + [200] * 4
    assert pg_db.psql("SELECT count(*) FROM ping_results") == str(8 * 3)
