"""The PostgreSQL read time share (postgres/read_share.py) on a clock of the test's own:
credit for a burst, spent by the time reads run, earned back at `share` per second;
a read that would wait past the gate's queue wait is refused (503), after waiting."""

from __future__ import annotations

import pytest

from output_service.storage.postgres.read_share import ReadShare
from output_service.storage.seam import ReadBusy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_passes_then_reads_wait_for_credit_then_are_refused() -> None:
    clock = Clock()
    share = ReadShare(share=0.5, burst_s=2.0, clock=clock)
    await share.admit(1.0)  # full credit: at once
    share.spend(2.0)
    share.spend(0.5)  # reads ran 2.5 s: credit -0.5 s
    clock.now += 0.5  # earns 0.25 s back: -0.25 s, 0.5 s from positive
    with pytest.raises(ReadBusy, match="share"):
        await share.admit(0.2)  # would have to wait 0.5 s: refused (after 0.2 s)
    await share.admit(1.0)  # waits the 0.5 s (on the loop's clock), then runs
    for _ in range(5):
        share.spend(2.0)  # five reads of 2 s each: 20 s of wall time to earn back
    with pytest.raises(ReadBusy, match="share"):
        await share.admit(0.01)


async def test_one_long_read_is_charged_at_most_max_charge() -> None:
    clock = Clock()
    share = ReadShare(share=0.5, burst_s=5.0, clock=clock)
    share.spend(60.0)  # one read that ran a minute (within its own time limit)
    await share.admit(0.01)  # charged MAX_CHARGE_S (2 s) of the 5 s: the next read runs


async def test_credit_never_exceeds_the_burst() -> None:
    clock = Clock()
    share = ReadShare(share=0.5, burst_s=2.0, clock=clock)
    clock.now += 3600.0  # an idle hour
    share.spend(2.0)
    share.spend(0.1)  # the whole burst and a little more
    with pytest.raises(ReadBusy):
        await share.admit(0.01)  # nothing left: an idle hour saved no more than the burst
