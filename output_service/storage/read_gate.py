"""The read bound: every read endpoint runs through one `ReadGate`.

Two limits, both backend-neutral:

- concurrency: at most `max_concurrent` reads run at once, on their own
  threads (never the default pool the writer, seals and dumps use). A read
  waits at most `queue_wait_s` for a slot, then gets `ReadBusy` (503 with
  Retry-After) instead of piling up behind the others;
- time: each step of a read gets a deadline (`timeout_s` from its start). The
  backend enforces it inside the database (SQLite: a progress handler that
  interrupts the statement; PostgreSQL: statement_timeout), so a slow query
  stops using the CPU, not just its caller's patience. Past it: `ReadBusy`.

Read threads run at a lower CPU priority than the rest of the process. A
stream (an export) holds one slot for its whole length but runs as many
short steps, each with a fresh deadline, so no single statement (and no
snapshot) lives long.

Reads yield to ingest. A lower nice value is not enough on its own: the read
threads share the GIL with the event loop ingest runs on, and Python hands the
GIL over in turns whatever the threads' priorities (measured: one client
looping over the queries cost ingest 35% of its rate with the read threads at
nice 10, 20 readers 53%; BENCHMARKS.md, "Query API, round three"). So while
`ingest_busy()` says ingest is working, the steps of all reads together use at
most `share_while_ingesting` of one core's time: each step's CPU time (on its
thread) is charged, and the next step of any read waits until the charge is
paid back at that share (at most MAX_PAUSE_S after any one step). While
ingest is busy the steps also take turns, one at a time across all slots: the
pause is the gate's, not a slot's, so two paused reads do not resume together
and run two steps' worth of CPU before either is charged. The wait is
inside the slot, so under ingest reads take longer and more of them find the
slots taken (503), which is the order of priority wanted. With ingest idle
nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from output_service.storage.seam import ReadBusy

T = TypeVar("T")

# The longest pause after one step: a read's latency under ingest stays bounded
# by its steps' count times (read_query_timeout_s + MAX_PAUSE_S).
MAX_PAUSE_S = 2.0
_RECHECK_S = 0.1  # a paused read looks at ingest_busy() this often


class ReadTimedOut(Exception):
    """Raised by a backend's read step that ran past its deadline."""


class ReadGate:
    def __init__(
        self,
        max_concurrent: int,
        timeout_s: float,
        *,
        queue_wait_s: float = 1.0,
        ingest_busy: Callable[[], bool] | None = None,
        share_while_ingesting: float = 1.0,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.timeout_s = timeout_s
        self.queue_wait_s = queue_wait_s
        self._ingest_busy = ingest_busy if share_while_ingesting < 1.0 else None
        self.share_while_ingesting = share_while_ingesting
        self._resume_at = 0.0  # monotonic: while ingest is busy, no step starts before
        self.charged_cpu_s = 0.0  # read CPU charged while ingest was busy (metrics, tests)
        self.waiting_for_ingest = 0  # reads paused right now, yielding to ingest
        # while ingest is busy one step runs at a time (its pause included)
        self._turn = asyncio.Lock()
        self.busy_steps_running = 0  # steps running now that took the turn
        self.most_busy_steps_at_once = 0  # the most of those at once (tests)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._pool = ThreadPoolExecutor(
            max_concurrent, thread_name_prefix="read", initializer=_lower_priority
        )
        self.refused = 0  # reads turned away (busy or timed out), for metrics
        self.running = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Steps]:
        """Hold one of the slots; `Steps.run` runs blocking steps with deadlines."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
        # cancellation that arrives as the slot is granted, so a task stopped at
        # that moment (the read upkeep at shutdown) would run on as if never asked
        try:
            async with asyncio.timeout(self.queue_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            self.refused += 1
            raise ReadBusy(
                f"too many reads at once (limit {self.max_concurrent}); retry shortly"
            ) from None
        self.running += 1
        try:
            yield Steps(self)
        finally:
            self.running -= 1
            self._slots.release()

    async def run(self, step: Callable[[float], T]) -> T:
        """One read of one step: a slot, a deadline, the step on a read thread."""
        async with self.slot() as steps:
            return await steps.run(step)

    async def bound(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read that runs on its own (an async driver, not the read threads):
        it holds a slot like any other, and its caller stops waiting for it after
        `timeout_s` (ReadBusy). The slot is given back only once the read has
        really stopped, so a cancelled read still counts against the limit."""
        async with self.slot():
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await read()
            except TimeoutError:
                self.refused += 1
                raise ReadBusy(
                    f"the read ran longer than {self.timeout_s:g} s; narrow the query or retry"
                ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def ingest_is_busy(self) -> bool:
        """Whether reads are yielding to ingest now (never, with no share set)."""
        return self._ingest_busy is not None and self._ingest_busy()

    async def yield_to_ingest(self) -> None:
        """Before a step: while ingest is busy, wait until the reads' CPU is paid back."""
        busy = self._ingest_busy
        if busy is None:
            return
        while busy():
            wait = self._resume_at - time.monotonic()
            if wait <= 0:
                return
            self.waiting_for_ingest += 1
            try:
                await asyncio.sleep(min(wait, _RECHECK_S))
            finally:
                self.waiting_for_ingest -= 1

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Around one step: while ingest is busy, wait for the turn (one step of
        any read at a time), then for the pause; with ingest idle, nothing."""
        if not self.ingest_is_busy():
            yield
            return
        async with self._turn:
            await self.yield_to_ingest()
            self.busy_steps_running += 1
            self.most_busy_steps_at_once = max(
                self.most_busy_steps_at_once, self.busy_steps_running
            )
            try:
                yield
            finally:
                self.busy_steps_running -= 1

    def charge(self, cpu_s: float) -> None:
        """After a step: its CPU time, paid back at the share while ingest is busy."""
        busy = self._ingest_busy
        if busy is None or not busy():
            return
        self.charged_cpu_s += cpu_s
        now = time.monotonic()
        pause = cpu_s * (1.0 / self.share_while_ingesting - 1.0)
        self._resume_at = min(max(self._resume_at, now) + pause, now + MAX_PAUSE_S)


def _lower_priority() -> None:
    """Read threads run at nice 10 (Linux schedules threads one by one): on a busy
    machine the writer's thread and the event loop get the CPU first, so heavy
    reads slow down rather than ingest."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Steps:
    """The steps of one read, all in the slot the read holds."""

    def __init__(self, gate: ReadGate) -> None:
        self._gate = gate

    async def run(self, step: Callable[[float], T]) -> T:
        """Run `step(deadline)` (a monotonic time) on a read thread."""
        gate = self._gate
        async with gate.turn():
            return await self._run(step)

    async def _run(self, step: Callable[[float], T]) -> T:
        gate = self._gate
        deadline = time.monotonic() + gate.timeout_s
        loop = asyncio.get_running_loop()
        used = [0.0]

        def timed(deadline: float) -> T:
            started = time.thread_time()
            try:
                return step(deadline)
            finally:
                used[0] = time.thread_time() - started

        running = loop.run_in_executor(gate._pool, timed, deadline)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            # the caller went away (a client hung up), but a step on a thread
            # cannot be stopped: it runs to its deadline. Keep the slot and the
            # turn until it has, and charge what it used, or a client that starts
            # reads and hangs up could keep every read thread busy, unbounded
            # and uncharged, however busy ingest is.
            with contextlib.suppress(BaseException):
                await asyncio.wait([running])
            raise
        except ReadTimedOut:
            gate.refused += 1
            raise ReadBusy(
                f"the read ran longer than {gate.timeout_s:g} s; narrow the query or retry"
            ) from None
        finally:
            gate.charge(used[0])
