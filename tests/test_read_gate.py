"""The read bound obeys cancellation: a task stopped while it waits for a slot
stops, even when the slot is granted in the same moment (Python 3.11's
`asyncio.wait_for` would swallow that cancel, and the read upkeep then ran on
through shutdown until the service was killed)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import ReadBusy


async def test_a_read_cancelled_as_its_slot_is_granted_stops() -> None:
    gate = ReadGate(1, 5.0)
    ran: list[str] = []

    async def read() -> None:
        async with gate.slot():
            ran.append("the read ran")

    try:
        async with gate.slot():  # the only slot is taken: the read waits for it
            task = asyncio.create_task(read())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not task.done()
        task.cancel()  # leaving the block granted the slot; the cancel comes with it
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == []
        async with asyncio.timeout(5):
            async with gate.slot():  # the slot was given back
                pass
    finally:
        gate.close()


async def test_a_bound_read_past_its_time_is_busy_and_frees_its_slot() -> None:
    gate = ReadGate(1, 0.05)
    stopped = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    try:
        with pytest.raises(ReadBusy, match="ran longer than"):
            await gate.bound(slow)
        assert stopped.is_set()
        assert gate.refused == 1
        async with asyncio.timeout(5):
            async with gate.slot():
                pass
    finally:
        gate.close()


async def test_a_step_whose_caller_is_cancelled_keeps_its_slot_and_is_charged() -> None:
    # a client that hangs up cancels its handler, but the step goes on running on
    # its thread: until it stops, its slot stays taken and its CPU is charged
    gate = ReadGate(1, 5.0, queue_wait_s=0.05, ingest_busy=lambda: True, share_while_ingesting=0.5)
    started, release = threading.Event(), threading.Event()

    def step(deadline: float) -> int:
        started.set()
        burn_until = time.thread_time() + 0.02  # some CPU, so the charge is > 0
        while time.thread_time() < burn_until:
            pass
        release.wait(10)
        return 1

    try:
        task = asyncio.create_task(gate.run(step))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()  # still waiting for its step to stop
        assert gate.running == 1
        with pytest.raises(ReadBusy):
            async with gate.slot():  # the slot is still the running step's
                pass
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.running == 0
        assert gate.charged_cpu_s >= 0.02
    finally:
        release.set()
        gate.close()
