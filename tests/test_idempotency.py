"""A retry is stored once for the whole window: keys are durable and memory only
caches them (`idempotency_max_keys` bounds memory, not correctness).

Rows are counted with separate sqlite3 connections over every results file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import Running, StartService, make_result
from tests.rotation_support import FakeClock


def stored_ips(db_dir: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(db_dir.glob("results_*.db")):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found += [r[0] for r in conn.execute("SELECT ip FROM ping_results")]
        finally:
            conn.close()
    return sorted(found)


async def send(running: Running, key: str, body: Any) -> tuple[int, Any, str | None]:
    resp = await running.results.post("/results", json=body, headers={"Idempotency-Key": key})
    return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")


async def stop(running: Running) -> None:
    await running.results.close()
    await running.health.close()


async def test_a_key_pushed_out_of_memory_survives_a_rotation(
    start_service: StartService,
) -> None:
    running = await start_service(idempotency_max_keys=5)
    db_dir = running.services.config.db_dir
    for n in range(7):
        status, _, _ = await send(running, f"k{n}", [make_result(f"192.0.2.{n}")])
        assert status == 200
    assert (await running.results.post("/rotate")).status == 200
    status, body, replayed = await send(running, "k1", [make_result("192.0.2.1")])
    assert (status, body, replayed) == (200, {"status": "ok", "received": 1}, "true")
    assert stored_ips(db_dir) == sorted(f"192.0.2.{n}" for n in range(7))


async def test_a_key_whose_file_retention_deleted_is_remembered_after_a_restart(
    start_service: StartService,
) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, keep_files=1)
    db_dir = running.services.config.db_dir
    assert (await send(running, "K", [make_result("192.0.2.1")]))[0] == 200
    first = running.db_file
    clock.advance(60)
    assert (await running.results.post("/rotate")).status == 200
    assert not first.exists()  # retention (keep_files 1) deleted the key's file
    await stop(running)

    clock.advance(60)
    again = await start_service(clock=clock, keep_files=1)
    status, body, replayed = await send(again, "K", [make_result("192.0.2.1")])
    assert (status, body, replayed) == (200, {"status": "ok", "received": 1}, "true")
    assert stored_ips(db_dir) == []  # the retry was not stored again


async def test_a_key_outside_the_window_is_free_again(start_service: StartService) -> None:
    clock = FakeClock()
    running = await start_service(clock=clock, idempotency_window_hours=1)
    db_dir = running.services.config.db_dir
    assert (await send(running, "K", [make_result("192.0.2.1")]))[0] == 200
    clock.advance(2 * 3600)
    status, _, replayed = await send(running, "K", [make_result("192.0.2.2")])
    assert (status, replayed) == (200, None)
    assert stored_ips(db_dir) == ["192.0.2.1", "192.0.2.2"]


async def test_an_empty_batch_claims_its_key(service: Running) -> None:
    """`[]` with key K, then a real batch with K: K was used for another body (422)."""
    assert (await send(service, "K", []))[:2] == (200, {"status": "ok", "received": 0})
    status, body, _ = await send(service, "K", [make_result()])
    assert status == 422
    assert body["status"] == "error"
    assert (await send(service, "K", []))[:3] == (200, {"status": "ok", "received": 0}, "true")
    assert stored_ips(service.services.config.db_dir) == []
