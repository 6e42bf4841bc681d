"""Reads yield to ingest on PostgreSQL too (`read_share_while_ingesting`): while ingest is
busy, the time a read's statements ran (the database's CPU it stands for) is charged to
the read gate, and the next read waits in its slot until it is paid back; with ingest
idle nothing is charged and nothing waits. The service runs in the test's process on a
real server; the states are read back from the gate, never how fast anything is.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("asyncpg")

from output_service.storage import read_gate
from output_service.storage.postgres import store as pg_store
from tests.conftest import StartService, make_result
from tests.pg_server import PgDatabase


async def until(condition: object, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_reads_wait_while_ingest_is_busy_and_go_on_once_it_is_idle(
    start_service: StartService, pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ingest stays "busy" for an hour after a batch, and a pause may be long: the test
    # sees the paused read whatever the machine's speed, then ends the busy spell itself
    monkeypatch.setattr(pg_store, "INGEST_BUSY_WINDOW_S", 3600.0)
    monkeypatch.setattr(read_gate, "MAX_PAUSE_S", 60.0)
    service = await start_service(
        storage="postgres", database_url=pg_db.url, read_share_while_ingesting=0.001
    )
    store = service.services.storage
    gate = service.services.read_gate
    assert isinstance(store, pg_store.PostgresStore) and gate is not None

    # idle: nothing stored yet, a read is not charged and does not wait
    assert not store.ingest_busy()
    assert (await service.health.get("/api/nodes")).status == 200
    assert gate.charged_cpu_s == 0.0

    resp = await service.results.post("/results", json=[make_result("198.51.100.9", hops=3)])
    assert resp.status == 200
    assert store.ingest_busy()
    # /api/nodes runs nothing on the read threads: what is charged is its statements'
    # time, the database's CPU it stands for
    assert (await service.health.get("/api/nodes")).status == 200
    assert gate.charged_cpu_s > 0.0

    # the next read (statements only, again) waits in its slot for the charge to be
    # paid back at 0.1%
    second = asyncio.create_task(service.health.get("/api/nodes"))
    await until(lambda: gate.waiting_for_ingest == 1)
    assert not second.done() and gate.running == 1
    monkeypatch.setattr(pg_store, "INGEST_BUSY_WINDOW_S", 0.0)  # ingest went idle
    async with asyncio.timeout(10):
        resp = await second
    assert resp.status == 200
    assert [n["results"] for n in (await resp.json())["nodes"]] == [1]
    assert gate.waiting_for_ingest == 0


async def test_a_batch_stored_by_another_instance_makes_ingest_busy_here(
    start_service: StartService, pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_store, "INGEST_BUSY_WINDOW_S", 3600.0)
    reader = await start_service(storage="postgres", database_url=pg_db.url)
    writer = await start_service(storage="postgres", database_url=pg_db.url)
    store = reader.services.storage
    assert isinstance(store, pg_store.PostgresStore)
    assert not store.ingest_busy()
    resp = await writer.results.post("/results", json=[make_result("198.51.100.10")])
    assert resp.status == 200
    # seen at the reader's next refresh of the shared totals (each second)
    await until(store.ingest_busy)
