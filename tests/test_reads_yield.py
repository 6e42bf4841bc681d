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


async def test_two_reads_while_ingest_is_busy_take_turns_step_by_step() -> None:
    """Two reads, 3 steps each, in both slots while ingest is busy: the steps run
    one at a time (counted inside the steps, on the read threads), and the pause
    is the gate's; with ingest idle the same two reads run steps side by side."""
    busy = [True]
    gate = ReadGate(2, 5.0, ingest_busy=lambda: busy[0], share_while_ingesting=0.5)
    lock = threading.Lock()
    running = [0]
    most = [0]

    def counted(_: float) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            burn_cpu(0.01)
        finally:
            with lock:
                running[0] -= 1

    async def read() -> None:
        async with gate.slot() as steps:
            for _ in range(3):
                await steps.run(counted)

    try:
        async with asyncio.timeout(10):
            await asyncio.gather(read(), read())
        assert most[0] == 1
        assert gate.most_busy_steps_at_once == 1 and gate.busy_steps_running == 0
        assert gate.charged_cpu_s > 0.0

        # idle: no turns, both slots' steps can be on the read threads at once
        busy[0] = False
        both = threading.Barrier(2, timeout=5)
        async with asyncio.timeout(10):
            await asyncio.gather(gate.run(lambda _: both.wait()), gate.run(lambda _: both.wait()))
    finally:
        gate.close()


async def test_the_live_files_summary_is_extended_in_bounded_chunks(
    start_service: StartService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 4 ids a chunk, 10 results stored in one batch are summarised in
    exactly ceil(10 / 4) = 3 chunks, 5 more in 2 (each range read once, whoever
    reads it), and /api/targets answers the same numbers as one pass would."""
    from output_service.storage.sqlite.reads import partials

    monkeypatch.setattr(partials, "CHUNK_ROWS", 4)
    service = await start_service(read_share_while_ingesting=1.0)
    cache = service.services.storage.reads.partial_cache  # type: ignore[attr-defined]
    assert cache.chunk_rows == 4
    ips = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    first = [make_result(ips[i % 3], hops=2) for i in range(10)]
    assert (await service.results.post("/results", json=first)).status == 200
    resp = await service.health.get("/api/targets?sort=results")
    assert resp.status == 200
    counts = {row["ip"]: row["results"] for row in (await resp.json())["targets"]}
    assert counts == {ips[0]: 4, ips[1]: 3, ips[2]: 3}
    assert cache.chunks_read == 3

    second = [make_result(ips[2], hops=2) for _ in range(5)]
    assert (await service.results.post("/results", json=second)).status == 200
    resp = await service.health.get("/api/targets?sort=results")
    assert resp.status == 200
    counts = {row["ip"]: row["results"] for row in (await resp.json())["targets"]}
    # read back independently from the file
    stored = dict(service.rows("SELECT ip, count(*) FROM ping_results GROUP BY ip"))
    assert counts == stored == {ips[0]: 4, ips[1]: 3, ips[2]: 8}
    assert cache.chunks_read == 3 + 2
