"""The single writer: one task, one thread, one write connection.

Handlers call `submit()`, which queues the batch and returns a future; the
writer task takes everything queued (up to `max_group_results`), commits it in
one transaction on its own thread and only then resolves each future. This is
both the durability rule (ack means committed) and the group commit that makes
concurrent ingest fast. Commands (rotation, snapshots) travel through the same
queue, so they always run between transactions.

The writer owns its file: it opens the first one (`open`) and swaps to the
next (`roll_over`, a rotation's step) on its own thread, inside its own task.
Nobody else holds the live file's connection; the file it rolls away from is
handed over to whoever seals it and never touched by the writer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from output_service.models import Batch
from output_service.storage.seam import QueueFull, StoreClosed, StoreError
from output_service.storage.sqlite.results_file import BatchMeta, BatchOutcome, ResultsFile

T = TypeVar("T")
log = structlog.get_logger("output_service.writer")


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_SQLITE_FULL = 13


def classify(exc: BaseException) -> str:
    """ "disk_full" for ENOSPC/EFBIG/EDQUOT and SQLite's "database or disk is full"."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return "disk_full"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(exc):
            return "disk_full"
    return "io"


@dataclass(slots=True)
class _Pending:
    batch: Batch
    meta: BatchMeta
    future: asyncio.Future[BatchOutcome]


@dataclass(slots=True)
class _Command:
    """A coroutine the writer task awaits between transactions (commands, rotation)."""

    fn: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]


CommitHook = Callable[[Sequence[tuple[BatchMeta, BatchOutcome]]], None]
GroupHook = Callable[[float, int], None]
ErrorHook = Callable[[StoreError], None]
# Runs on the writer thread before the results transaction of a group (the hop
# outbox uses it: its rows must be durable before the batch can be acknowledged).
# It may hand its work to a thread of its own and return that work's future: the
# group's rows are inserted meanwhile, and the results transaction commits only
# once the future is done; its error rolls the group back.
BeforeCommit = Callable[[Sequence[tuple[Batch, BatchMeta]]], "Future[None] | None"]
# On the writer thread, around the results transaction of a group: which keys
# the durable key index already has (before), and record the new ones (after
# the commit, so a key never claims a batch that was not stored).
KeysBefore = Callable[[Sequence[tuple[Batch, BatchMeta]]], tuple[dict[str, Any], str]]
KeysAfter = Callable[[Sequence[tuple[Batch, BatchMeta]], Sequence[BatchOutcome]], None]
# Awaited by the writer task after each group, before the next one is taken:
# the size/age rotation check lives there, so a rotation falls between groups.
AfterGroup = Callable[[], Awaitable[None]]


class Writer:
    """Owns the results file; everything that writes goes through here."""

    def __init__(
        self,
        *,
        max_group_results: int,
        max_delay_s: float,
        queue_max_results: int,
        on_commit: CommitHook,
        on_group: GroupHook | None = None,
        before_commit: BeforeCommit | None = None,
        on_error: ErrorHook | None = None,
        after_group: AfterGroup | None = None,
        keys_before: KeysBefore | None = None,
        keys_after: KeysAfter | None = None,
    ) -> None:
        self._file: ResultsFile | None = None  # set by `open`, swapped by `roll_over`
        self._keys_before = keys_before
        self._keys_after = keys_after
        # The error of the last failed transaction, until one commits again (/ready).
        self.failing: StoreError | None = None
        self._on_error = on_error
        self._restored = False  # set on the writer thread, reported on the loop
        self._max_group = max_group_results
        self._max_delay = max_delay_s
        self._queue_max = queue_max_results
        self._on_commit = on_commit
        self._on_group = on_group
        self._before_commit = before_commit
        self._after_group = after_group
        self._queue: deque[_Pending | _Command] = deque()
        self._queued_results = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._task: asyncio.Task[None] | None = None
        # Futures of the group or command being worked on (taken off the queue):
        # if the task dies they are answered too, not only what still waits.
        self._working: list[asyncio.Future[Any]] = []

    @property
    def queued_results(self) -> int:
        return self._queued_results

    @property
    def queued_batches(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        """No batch would be accepted now: a caller can refuse before reading one."""
        return self._queued_results >= self._queue_max

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def open(self, first: Callable[[], ResultsFile]) -> None:
        """Open the first live file (`first`, on the writer thread) and start."""
        self._file = await self.run_in_thread(first)
        self._start()

    @property
    def path(self) -> Path:
        """The live file's path."""
        return self._live().path

    def _live(self) -> ResultsFile:
        if self._file is None:
            raise RuntimeError("the writer is not open")
        return self._file

    async def roll_over(self, open_next: Callable[[], ResultsFile]) -> ResultsFile:
        """Swap to the file `open_next` makes (run on the writer thread) and
        return the old one, which from now on belongs to the caller (to seal it).

        Only from inside the writer task (a command queued with `between`, or
        the after-group hook), so it always falls between two transactions. If
        `open_next` raises, nothing changes and the error is the caller's.
        """
        if asyncio.current_task() is not self._task:
            raise RuntimeError("roll_over runs only in the writer task")
        new_file = await self.run_in_thread(open_next)
        old_file, self._file = self._live(), new_file
        return old_file

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sqlite-writer")
        self._task.add_done_callback(self._ended)

    def submit(self, batch: Batch, meta: BatchMeta) -> asyncio.Future[BatchOutcome]:
        """Queue a batch; the future resolves after its transaction has committed."""
        self._check_open()
        size = len(batch.results)
        if self._queued_results + size > self._queue_max and self._queued_results > 0:
            raise QueueFull(f"{self._queued_results} results already waiting")
        future: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, meta, future))
        self._queued_results += size
        self._wakeup.set()
        return future

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread between two transactions."""
        return await self.between(lambda: self.run_in_thread(fn))

    async def between(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await `fn()` in the writer task between two transactions.

        Unlike `call`, `fn` is a coroutine: it can run work on the writer thread
        (`run_in_thread`) and ask the writer to `roll_over` before the next
        group is taken.
        """
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Command(fn, future))
        self._wakeup.set()
        return await future

    def _check_open(self) -> None:
        if self._closing:
            raise StoreClosed("shutting down")
        if self._task is not None and self._task.done():  # a bug stopped it: never hang
            raise StoreError("the writer has stopped; see the log", "io")

    async def run_in_thread(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread now (for set-up before `start`)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        """Refuse new work, commit everything queued, then close the file (once)."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            # a task that died has already answered its waiters (`_ended`)
            await asyncio.wait([self._task])
        if self._file is not None:
            await self.run_in_thread(self._file.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._queue[0]
            if isinstance(head, _Command):
                self._queue.popleft()
                self._working = [head.future]
                await self._run_command(head)
                self._working = []
                continue
            if self._max_delay > 0 and self._queued_results < self._max_group:
                await asyncio.sleep(self._max_delay)
            group = self._take_group()
            self._working = [p.future for p in group]
            await self._commit(group)
            self._working = []
            if self._after_group is not None:
                await self._after_group()

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        taken = 0
        while self._queue and isinstance(self._queue[0], _Pending):
            size = len(self._queue[0].batch.results)
            if group and taken + size > self._max_group:
                break
            item = self._queue.popleft()
            assert isinstance(item, _Pending)
            group.append(item)
            taken += size
        self._queued_results -= taken
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        items = [(p.batch, p.meta) for p in group]
        started = loop.time()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._write, items)
        except Exception as exc:  # every batch of the group failed; none is acknowledged
            error = StoreError(f"{type(exc).__name__}: {exc}", classify(exc))
            error.__cause__ = exc
            self.failing = error
            if self._on_error is not None:
                self._on_error(error)
            for p in group:
                if not p.future.done():
                    p.future.set_exception(error)
                    # a cancelled waiter never reads it; don't let asyncio log "never retrieved"
                    p.future.add_done_callback(_consume_exception)
            return
        self.failing = None
        if self._restored and self._on_error is not None:
            self._restored = False
            self._on_error(StoreError("results file was deleted; restored it", "file_removed"))
        try:  # bookkeeping only: a bug in it must not stop the writer or hide the ack
            if self._on_group is not None:
                self._on_group(loop.time() - started, len(group))
            self._on_commit([(p.meta, o) for p, o in zip(group, outcomes, strict=True)])
        except Exception:
            log.exception("commit bookkeeping failed; the group is committed")
        for p, outcome in zip(group, outcomes, strict=True):
            if not p.future.done():
                p.future.set_result(outcome)

    def _write(self, items: Sequence[tuple[Batch, BatchMeta]]) -> list[BatchOutcome]:
        """One group, on the writer thread."""
        file = self._live()
        if file.restore_if_removed():
            self._restored = True
        hook = self._before_commit(items) if self._before_commit is not None else None
        try:
            known, since = self._keys_before(items) if self._keys_before else ({}, "")
            outcomes = file.write_group(items, known, since, hook)
        finally:
            if hook is not None:  # one group's hook at a time, even when the group failed
                futures.wait([hook])
        if self._keys_after is not None:
            self._keys_after(items, outcomes)
        return outcomes

    def _ended(self, task: asyncio.Task[None]) -> None:
        """If the writer task ends other than by `close()` (a bug, a cancellation),
        say so and answer every waiter at once (503), rather than let them hang:
        the batches and commands still queued and the one being worked on."""
        if not task.cancelled() and task.exception() is None:
            return
        if task.cancelled():
            log.error("the writer was cancelled")
        else:
            log.error("the writer stopped", exc_info=task.exception())
        error = StoreError("the writer has stopped; see the log", "io")
        waiting = [*self._working, *(item.future for item in self._queue)]
        self._queue.clear()
        self._working = []
        self._queued_results = 0
        for future in waiting:
            if not future.done():
                future.set_exception(error)
                future.add_done_callback(_consume_exception)

    async def _run_command(self, command: _Command) -> None:
        try:
            result = await command.fn()
        except Exception as exc:
            if not command.future.done():
                command.future.set_exception(exc)
            return
        if not command.future.done():
            command.future.set_result(result)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
