"""The read bound obeys cancellation: a task stopped while it waits for a slot
stops, even when the slot is granted in the same moment (Python 3.11's
`asyncio.wait_for` would swallow that cancel, and the read upkeep then ran on
through shutdown until the service was killed)."""

from __future__ import annotations

import asyncio

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
