"""Reads yield to ingest (read_gate.py): while ingest is busy, the read steps'
CPU time is paid back at `read_share_while_ingesting` before the next step
starts; with ingest idle nothing waits; read threads run at nice 10. These
check that the mechanism is in effect (states and values read back), never how
fast anything is."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from output_service.config import Config, ConfigError
from output_service.storage.read_gate import ReadGate
from tests.conftest import StartService, make_result


def burn_cpu(seconds: float) -> float:
    """Spin on this thread until it has used `seconds` of CPU; the CPU time used."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass
    return time.thread_time() - started


async def until(condition: object, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_while_ingest_is_busy_the_next_step_waits_until_ingest_is_idle() -> None:
    busy = [True]
    gate = ReadGate(1, 5.0, ingest_busy=lambda: busy[0], share_while_ingesting=0.01)
    ran: list[str] = []
    try:
        used = await gate.run(lambda _: burn_cpu(0.05))
        # the step's CPU time is charged (the gate measures around the step)
        assert gate.charged_cpu_s >= used
        # paid back at 1%: 99x the CPU used, capped at MAX_PAUSE_S (2 s): the
        # next read waits for ingest rather than starting
        second = asyncio.create_task(gate.run(lambda _: ran.append("second")))
        await until(lambda: gate.waiting_for_ingest == 1)
        assert ran == []
        busy[0] = False  # ingest went idle: the paused read goes on
        async with asyncio.timeout(5):
            await second
        assert ran == ["second"]
        assert gate.waiting_for_ingest == 0
    finally:
        gate.close()


async def test_with_ingest_idle_nothing_is_charged_and_nothing_waits() -> None:
    gate = ReadGate(1, 5.0, ingest_busy=lambda: False, share_while_ingesting=0.01)
    try:
        await gate.run(lambda _: burn_cpu(0.05))
        assert gate.charged_cpu_s == 0.0
        assert not gate.ingest_is_busy()
        async with asyncio.timeout(5):
            assert await gate.run(lambda _: "answered") == "answered"
    finally:
        gate.close()


async def test_a_share_of_1_turns_the_yielding_off() -> None:
    def never_asked() -> bool:
        raise AssertionError("ingest_busy is not consulted when the share is 1")

    gate = ReadGate(1, 5.0, ingest_busy=never_asked, share_while_ingesting=1.0)
    try:
        await gate.run(lambda _: burn_cpu(0.01))
        assert await gate.run(lambda _: "answered") == "answered"
        assert not gate.ingest_is_busy() and gate.charged_cpu_s == 0.0
    finally:
        gate.close()


async def test_read_threads_run_at_nice_10_read_back_from_proc() -> None:
    gate = ReadGate(1, 5.0)

    def own_nice(_: float) -> tuple[int, int]:
        tid = threading.get_native_id()
        # /proc/<pid>/task/<tid>/stat: field 19 is the nice value (after the
        # parenthesised command name, which may hold spaces)
        stat = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[16]), tid

    try:
        nice, tid = await gate.run(own_nice)
        assert nice == 10
        assert tid != threading.get_native_id()  # a read thread, not the loop's
    finally:
        gate.close()


async def test_the_service_yields_reads_to_ingest_after_a_batch_is_stored(
    start_service: StartService,
) -> None:
    service = await start_service()
    gate = service.services.read_gate
    assert gate is not None and gate.share_while_ingesting == 0.1  # the default
    resp = await service.results.post("/results", json=[make_result("198.51.100.7", hops=3)])
    assert resp.status == 200
    # a batch was just stored: ingest counts as busy, and a read's CPU is charged
    assert gate.ingest_is_busy()
    resp = await service.health.get("/api/results?limit=10")
    assert resp.status == 200
    assert [item["ip"] for item in (await resp.json())["results"]] == ["198.51.100.7"]
    if gate.ingest_is_busy():  # still within the window after the read
        assert gate.charged_cpu_s > 0.0
    # a second with no batch stored: ingest is idle, reads run unpaced
    await until(lambda: not gate.ingest_is_busy())


async def test_the_service_with_share_1_never_yields(start_service: StartService) -> None:
    service = await start_service(read_share_while_ingesting=1.0)
    gate = service.services.read_gate
    assert gate is not None
    resp = await service.results.post("/results", json=[make_result("198.51.100.8", hops=3)])
    assert resp.status == 200
    assert not gate.ingest_is_busy()
    assert (await service.health.get("/api/results?limit=10")).status == 200
    assert gate.charged_cpu_s == 0.0


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match="read_share_while_ingesting"):
        Config(read_share_while_ingesting=share).validate()
