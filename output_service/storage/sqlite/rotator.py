"""Rotation as a writer step: start a new file between two transactions.

The rotator holds the policy (when), the naming, the sealing and retention;
the writer holds the live file. A rotation asks the writer to roll over to a
file the rotator makes (`Writer.roll_over`), and takes back the old one to
seal it: the rotator never touches the writer's connection.

The writer task runs `rotate()` between groups (after a commit when the size
or age limit is reached, or when `/rotate` asks), so a batch is never split
across files and nothing queued is lost: batches that arrive meanwhile wait in
the queue and go to the new file. The writer is paused only while the new file
is created; the old one is closed and sealed on another thread
afterwards (which builds its hop-IP index: see `schema`), and retention runs
once that is done.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.storage.seam import ArchiveError, utc_text
from output_service.storage.sqlite.file_names import next_file_name, size_on_disk
from output_service.storage.sqlite.inventory import make_live, temp_dir
from output_service.storage.sqlite.registry import FileEntry, FileRegistry
from output_service.storage.sqlite.results_file import ResultsFile
from output_service.storage.sqlite.rotation_policy import Reason, RotationPolicy
from output_service.storage.sqlite.snapshot import seal
from output_service.storage.sqlite.writer import Writer

log = structlog.get_logger("output_service.storage")

# After a failed automatic rotation (disk full, permissions), wait this long
# before trying again instead of retrying after every commit.
RETRY_AFTER_S = 60.0


class RotationError(ArchiveError):
    """A new results file could not be created; writing goes on in the old one."""


def open_results_file(config: Config, path: Path) -> ResultsFile:
    return ResultsFile.open(
        path,
        synchronous=config.synchronous,
        cache_size_mb=config.cache_size_mb,
        wal_autocheckpoint=config.wal_autocheckpoint,
    )


def create_results_file(config: Config, path: Path, tmp_dir: Path, started: float) -> ResultsFile:
    """A new file that appears in `db_dir` with its full schema (and its own
    record of when it started: `file_info`) or not at all.

    The schema is made in `tmp_dir` and the file renamed into place, so an
    operator (or a restart after a crash) never finds a half-made file.
    """
    staging = tmp_dir / path.name
    made = open_results_file(config, staging)
    try:
        made.record_start(started)
    finally:
        made.close()
    staging.replace(path)
    return open_results_file(config, path)


class Rotator:
    """Decides and performs rotations and retention for one SqliteStore."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        registry: FileRegistry,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._registry = registry
        self._clock = clock
        self.policy = RotationPolicy.from_limits(config.max_size_mb, config.rotation_days)
        self._retry_at = float("-inf")
        self._sealing: set[asyncio.Task[None]] = set()
        self.last_rotation: float | None = None
        # Why the last rotation failed, until one succeeds: /ready and /health
        # show it (degraded), so a file growing past its limit is not silent.
        self.failing: str | None = None

    async def open_current(self) -> Callable[[], ResultsFile]:
        """At start-up, after the retained files are registered: continue the
        newest if it is within both limits, else name a new file. Returns how
        to open it, for the writer to run on its own thread (`Writer.open`)."""
        config = self._config
        db_dir = config.db_dir
        entries = self._registry.entries
        newest = entries[-1] if entries else None
        reason = self.due(newest) if newest is not None else None
        if newest is not None and newest.started_in_future:
            reason = Reason.CLOCK  # a clock step: never continued as the live file
        if newest is not None and reason is None:
            newest.sealed = False
            self.last_rotation = newest.started
            started = asyncio.get_running_loop().time()
            if await asyncio.to_thread(make_live, newest.path):
                took = asyncio.get_running_loop().time() - started
                log.info(
                    "hop-IP index dropped from the continued file",
                    file=newest.name,
                    took_ms=round(took * 1000, 3),
                )
            path = newest.path

            def first() -> ResultsFile:
                return open_results_file(config, path)
        else:
            taken = set(await asyncio.to_thread(os.listdir, db_dir))
            now = self._clock()
            name = next_file_name(now, newest.name if newest else None, taken)
            current = self._registry.add(FileEntry(db_dir / name, started=now))
            if newest is not None and reason is not None:
                self._metrics.rotations.labels(reason=reason.value).inc()
                log.info("rotated at start-up", reason=reason.value, old=newest.name, new=name)
            self.last_rotation = now

            def first() -> ResultsFile:
                return create_results_file(config, current.path, temp_dir(db_dir), now)

        return first

    async def finish_sealed(self) -> None:
        """At start-up, once the writer has opened the live file: every retained
        file but the current one gets the seed indexes it lacks. A crash between
        a rotation and the end of its seal, or the newest file rotated at
        start-up, leaves one without the hop-IP index. Retention runs first, so
        no index is built for a file about to go."""
        self._registry.retire(self._config.keep_files)
        current = self._registry.current
        for entry in self._registry.entries:
            if entry is current:
                continue
            started = asyncio.get_running_loop().time()
            try:
                built = await asyncio.to_thread(seal, entry.path, self._config.seal_wait_s)
            except Exception as exc:  # the data is there; only the index is not
                entry.sealed = False  # served through a snapshot, which builds it
                log.warning("cannot seal a results file", file=entry.name, error=str(exc))
                continue
            if built:
                took = asyncio.get_running_loop().time() - started
                log.info("sealed at start-up", file=entry.name, seal_ms=round(took * 1000, 3))

    def due(self, entry: FileEntry) -> Reason | None:
        """Is a rotation of `entry` due now? Its age counts from the start its
        file records (never from its name); a start ahead of the clock counts
        as now."""
        age = max(0.0, self._clock() - entry.started)
        return self.policy.reason(size_on_disk(entry.path), age)

    async def after_group(self, writer: Writer) -> None:
        """`writer`'s after-group hook: rotate when a limit is reached.

        Never raises: a failed rotation is logged and counted, and the writer
        keeps committing to the current file.
        """
        now = self._clock()
        if now < self._retry_at:
            return
        try:
            reason = self.due(self._registry.current)
            if reason is not None:
                await self.rotate(writer, reason)
        except RotationError:
            self._retry_at = now + RETRY_AFTER_S
        except Exception:  # a bug here must not stop the writer
            log.exception("rotation check failed")
            self._retry_at = now + RETRY_AFTER_S

    async def rotate_now(self, writer: Writer) -> str:
        """Rotate between transactions (POST /rotate); returns the new file name
        once the old file is sealed and retention has run."""
        name, sealing = await writer.between(lambda: self.rotate(writer, Reason.MANUAL))
        await asyncio.shield(sealing)
        return name

    async def rotate(self, writer: Writer, reason: Reason) -> tuple[str, asyncio.Task[None]]:
        """In the writer task: open the next file, swap, and seal the old one in
        the background (the returned task)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = self._clock()
        current = self._registry.current
        db_dir = self._config.db_dir
        config = self._config

        def open_next() -> ResultsFile:
            name = next_file_name(now, current.name, set(os.listdir(db_dir)))
            return create_results_file(config, db_dir / name, temp_dir(db_dir), now)

        try:
            old_file = await writer.roll_over(open_next)
        except Exception as exc:
            self._metrics.rotation_errors.inc()
            log.error(
                "rotation failed, still writing the old file", file=current.name, error=str(exc)
            )
            self.failing = f"rotation failing since {_clock_text(now)}: {exc}"
            raise RotationError(f"cannot start a new results file: {exc}") from exc
        self.failing = None
        new_path = writer.path
        self._registry.acquire(current)  # sealing reads it: retention must wait
        self._registry.add(FileEntry(new_path, started=now))
        self.last_rotation = now
        paused = loop.time() - started
        self._metrics.rotations.labels(reason=reason.value).inc()
        self._metrics.rotation_pause.observe(paused)
        log.info(
            "rotated",
            reason=reason.value,
            old=current.name,
            new=new_path.name,
            writer_paused_ms=round(paused * 1000, 3),
        )
        task = loop.create_task(self._seal(old_file, current), name=f"seal {current.name}")
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)
        return new_path.name, task

    async def _seal(self, file: ResultsFile, entry: FileEntry) -> None:
        started = asyncio.get_running_loop().time()
        try:
            built = await asyncio.to_thread(_close_and_seal, file, self._config.seal_wait_s)
            entry.sealed = True
            took = asyncio.get_running_loop().time() - started
            log.info(
                "sealed", file=entry.name, seal_ms=round(took * 1000, 3), hop_index_built=built
            )
        except Exception as exc:  # the data is committed; only the tidy-up failed
            log.warning("sealing the old results file failed", file=entry.name, error=str(exc))
        finally:
            self._registry.release(entry)
        self._registry.retire(self._config.keep_files)

    async def close(self) -> None:
        """Wait for old files still being sealed (after the writer has stopped)."""
        if self._sealing:
            await asyncio.gather(*self._sealing, return_exceptions=True)


def _clock_text(moment: float) -> str:
    return utc_text(moment)


def _close_and_seal(file: ResultsFile, wait_s: float) -> bool:
    """Record the old file as being sealed and close the writer's connection to
    it, then seal it (its hop-IP index, then the one checkpoint); True if the
    index was built."""
    try:
        file.record_state("sealing")
    finally:
        file.close()
    return seal(file.path, wait_s)
