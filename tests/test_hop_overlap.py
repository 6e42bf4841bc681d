"""The hop hook runs beside the results insert, and still commits first.

The recorder writes a group's hops to state.db on a thread of its own while the
writer inserts the group's rows; the results transaction commits only after
state.db has. These tests watch that order on the real app with real files: the
results connection's trace callback reads state.db (a separate connection) at
the moment COMMIT starts, and a state.db that cannot be written fails the group
with nothing stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Running, StartService, query
from tests.hops_input import InputService
from tests.test_hops_loop import FAST, traced


@pytest.fixture
async def input_service() -> AsyncIterator[InputService]:
    service = await InputService().start()
    yield service
    await service.close()


def state_file(running: Running) -> Path:
    return running.services.config.db_dir / "state.db"


async def test_hops_are_durable_when_the_results_commit_starts(
    start_service: StartService, input_service: InputService
) -> None:
    running = await start_service(input_url=input_service.url, **FAST)
    seen_at_commit: list[set[str]] = []

    def on_statement(sql: str) -> None:  # on the writer thread, before SQLite runs `sql`
        if sql.strip().upper() == "COMMIT":
            rows = query(state_file(running), "SELECT ip FROM seen")
            seen_at_commit.append({ip for (ip,) in rows})

    conn = running.services.storage.writer._live()._conn
    conn.set_trace_callback(on_statement)
    hops = [f"198.51.100.{i}" for i in range(1, 41)]
    results = [traced(f"192.0.2.{i}", *hops[i * 4 : i * 4 + 4]) for i in range(10)]
    response = await running.results.post("/results", json=results)
    assert response.status == 200, await response.text()
    conn.set_trace_callback(None)
    assert seen_at_commit, "the results transaction never committed"
    assert set(hops) <= seen_at_commit[-1]
    assert running.rows("SELECT count(*) FROM traceroute_hops") == [(40,)]


async def test_a_state_db_that_cannot_be_written_stores_nothing(
    start_service: StartService, input_service: InputService
) -> None:
    running = await start_service(input_url=input_service.url, **FAST)
    hops_conn = running.services.hops._writer_state._conn  # type: ignore[union-attr]
    hops_conn.execute("PRAGMA busy_timeout = 0")  # fail at once rather than after 5 s
    blocker = sqlite3.connect(state_file(running), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds state.db's write lock
        refused = await running.results.post(
            "/results", json=[traced("192.0.2.1", "198.51.100.1", "198.51.100.2")]
        )
        assert refused.status == 503
        assert "nothing stored" in (await refused.json())["error"]
        assert running.rows("SELECT count(*) FROM ping_results") == [(0,)]
        assert running.rows("SELECT count(*) FROM traceroute_hops") == [(0,)]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    retried = await running.results.post(
        "/results", json=[traced("192.0.2.1", "198.51.100.1", "198.51.100.2")]
    )
    assert retried.status == 200
    assert running.rows("SELECT count(*) FROM ping_results") == [(1,)]
    seen = query(state_file(running), "SELECT ip FROM seen ORDER BY ip")
    assert seen == [("198.51.100.1",), ("198.51.100.2",)]


async def test_state_db_checkpoints_as_the_results_files_do(
    start_service: StartService, input_service: InputService
) -> None:
    """wal_autocheckpoint reaches state.db too: at SQLite's default of 1,000 pages
    a group's scattered seen-set pages checkpointed after nearly every commit."""
    running = await start_service(input_url=input_service.url, wal_autocheckpoint=4321, **FAST)
    hops = running.services.hops
    assert hops is not None
    for state in (hops._writer_state, hops._sender_state):
        assert state is not None
        assert state._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (4321,)
