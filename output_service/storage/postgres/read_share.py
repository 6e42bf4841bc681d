"""A time share for reads on PostgreSQL: what `nice` is for the SQLite backend's reads.

On SQLite a read's work runs on this process's read threads, at nice 10, so a
busy machine gives ingest the CPU first. On PostgreSQL most of a read's work
runs in a database backend, which no client can deprioritise; a flood of cheap
reads (each well within its time limit) then takes the database's CPU from
ingest (measured: ingest kept 24-37% of its rate under 20 looping readers;
BENCHMARKS.md, "Query API on PostgreSQL").

So reads share time: the reads of an instance together run for at most
`share` of the wall-clock time (a read's time is from getting its slot to its
answer), with `burst_s` of credit for a dashboard's burst. A read that finds
the credit spent waits for it (at most the read gate's queue wait), then gets
503 with Retry-After, as a read that finds every slot taken does. Exports are
bounded by their slot, not by this share. (Exempting a read that starts while
no other runs was measured too: ingest then kept 42% under 20 readers instead
of 83%, since a slot freed for a moment lets the next read through.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from output_service.storage.seam import ReadBusy

SHARE = 0.5  # read-seconds per second, summed over concurrent reads
BURST_S = 5.0
# One read is charged at most this much: a single long read (the first /api/targets
# after start-up, seconds) is bounded by its time limit, not by the share, which is
# for floods of reads. Uncapped, a 14 s read held every read after it back (503) for
# half a minute (measured by hand).
MAX_CHARGE_S = 2.0


class ReadShare:
    def __init__(
        self,
        share: float = SHARE,
        burst_s: float = BURST_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self.burst_s = burst_s
        self._clock = clock
        self._credit = burst_s
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._credit = min(self.burst_s, self._credit + (now - self._at) * self.share)
        self._at = now
        return self._credit

    async def admit(self, wait_s: float) -> None:
        """Return once there is credit; ReadBusy if that would take over `wait_s`."""
        credit = self._refill()
        if credit > 0:
            return
        need_s = -credit / self.share
        # the credit accrues with time: nothing else to wait on. A read refused waits
        # all the same, so that refused clients that retry at once do not flood the
        # event loop ingest runs on (measured: 3,194 instant 503s in 10 s did).
        await asyncio.sleep(min(need_s, wait_s))
        if need_s > wait_s:
            raise ReadBusy("reads are using their share of the database's time; retry shortly")

    def spend(self, seconds: float) -> None:
        self._refill()
        self._credit -= min(seconds, MAX_CHARGE_S)
