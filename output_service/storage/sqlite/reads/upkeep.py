"""Background upkeep of the SQLite read side: warm summaries, pre-rendered items.

One task, started once storage is open and stopped before it closes. At
start-up, then every `interval_s`, it:

1. warms the partial target summaries of every retained file (and the merge
   of the older ones), through the read bound like any read, one file per
   read: the first `/api/targets` after a restart then costs what a warm one
   does instead of a pass over every file (which ran past the read timeout on
   a loaded machine). It never blocks /ready: the service serves meanwhile, and
   a query that comes while a file is being read waits for that file's
   partial rather than reading it a second time;
2. renders the export items of each sealed file that has none yet into its
   side file (prerender.py), on its own thread at the lowest CPU priority,
   and deletes side files of files no longer retained. A newly sealed file
   is picked up at the next round: no hook in the rotator is needed.

Failures are logged and retried at the next round; nothing here can stop the
service or a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from output_service.storage.seam import ReadBusy
from output_service.storage.sqlite.reads.prerender import SideFiles
from output_service.storage.sqlite.reads.reads import ListFiles, SqliteReads

log = structlog.get_logger(__name__)

INTERVAL_S = 30.0
STOP_WAIT_S = 3.0


class ReadUpkeep:
    def __init__(
        self,
        reads: SqliteReads,
        files: ListFiles,
        sides: SideFiles | None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._reads = reads
        self._files = files
        self._sides = sides
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._job: Future[None] | None = None  # the prerender thread's current work
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prerender", initializer=_lowest)
        self._task: asyncio.Task[None] | None = None
        # set once the first round is over (tests wait for it, so that no
        # warm-up read holds a slot of the read bound while they measure it)
        self.first_round = asyncio.Event()

    async def round(self) -> None:
        """One round: warm the summaries, then render what is sealed and missing."""
        try:
            await self._reads.warm_targets()
        except ReadBusy as exc:  # the bound is busy with real reads: next round
            log.info("summary warm-up deferred", reason=str(exc))
        if self._sides is not None:
            self._job = self._pool.submit(self._prerender, self._sides)
            await asyncio.wrap_future(self._job)

    def _prerender(self, sides: SideFiles) -> None:
        retained = list(self._files())
        sides.prune(retained)
        # newest first: the first is the live file (or about to be continued as
        # it), never worth opening here; every older one is sealed or sealing
        for path in retained[1:]:
            if self._stop.is_set():
                return
            if sides.build(path, self._stop.is_set):
                log.info("export items pre-rendered", file=path.name)

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # never let upkeep die quietly or take anything down
                log.exception("read upkeep failed; retrying at the next round")
            self.first_round.set()
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop between steps: a build in progress stops at its next chunk. The
        loop is never blocked on the thread; after STOP_WAIT_S it is left to
        finish its chunk alone (a half-built side file is deleted next time)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._job is not None and not self._job.done():
            await asyncio.wait([asyncio.wrap_future(self._job)], timeout=STOP_WAIT_S)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lowest() -> None:
    """Pre-rendering is the least urgent work in the process: nice 19."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
