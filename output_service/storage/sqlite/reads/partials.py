"""Per-file partial target summaries, cached and extended by id.

Rows of a results file are never updated, only appended (ids grow). So the
summary of rows with id <= M is fixed once computed: the cache keeps, per
(file identity, filter), a `TargetAccumulator` over ids up to M, and a later
query only reads the rows with id > M and merges them in. A sealed file is
read once; the live file costs only what arrived since the last query. This is
the rollup /api/targets needs to answer over a week of data in well under a
second, built by the reader alone: the writer's transaction stays as it is.

The extension runs in chunks of at most `CHUNK_ROWS` ids, one read step each,
with the merge into the cached partial a step of its own: while ingest is busy
the read gate paces reads between steps (read_gate.py), and a step it charges
only after it ran, so one step over everything ingested since the last query
(tens of thousands of rows) would use the CPU first and pay it back later. The
chunks read so far are kept with the entry, so a read that stops (deadline,
cancellation) leaves them for the next one.

Identity is (name, inode, device): a file recreated under the same name (a
restore) is a new entry. Entries for files no longer listed are dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from output_service.insight.summaries import TargetAccumulator
from output_service.storage.read_gate import ReadTimedOut
from output_service.storage.seam import ResultFilter
from output_service.storage.sqlite.reads import queries

if TYPE_CHECKING:
    from output_service.storage.sqlite.reads.reads import _Conn

MAX_ENTRIES = 64
MAX_MERGED = 16
# ids per chunk of an extension: 0.045 s of CPU on the bench's rows (10-hop
# results; 60,000 ids in one pass: 0.29 s, more than the gate's longest pause
# repays at a 0.1 share; the merge into a 140,000-row partial: 0.055 s)
CHUNK_ROWS = 5_000


@dataclass(slots=True)
class _Partial:
    upto: int
    acc: TargetAccumulator
    # rows (upto, pending[0]] read in chunks, not yet merged into `acc`: private
    # to the cache (never handed out), so chunks are merged into it in place
    pending: tuple[int, TargetAccumulator] | None = None


Seed = Callable[[Path], "tuple[int, TargetAccumulator] | None"]


def summarize(
    run: Callable[[str, dict[str, Any]], list[Any]], flt: ResultFilter, ids: tuple[int, int]
) -> TargetAccumulator:
    """The partial target summary of the rows with ids in (after, upto], by
    `run(sql, params)` on the file (a read connection, or a side file's build)."""
    acc = TargetAccumulator()
    sql, params = queries.target_totals(flt, ids)
    totals = run(sql, params)
    acc.add_totals(row[:6] for row in totals)
    acc.add_nodes((row[0], node) for row in totals for node in json.loads(f"[{row[6] or ''}]"))
    sql, params = queries.target_rtts(flt, ids)
    acc.add_rtts(run(sql, params))
    return acc


class PartialCache:
    def __init__(self, seed: Seed | None = None, chunk_rows: int | None = None) -> None:
        self.chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
        self.chunks_read = 0  # chunks summarised (tests, metrics)
        # where an unfiltered partial can start from instead of row 0: a sealed
        # file's summary kept in its side file (prerender.py)
        self._seed = seed
        self._entries: dict[tuple[str, int, int, ResultFilter], _Partial] = {}
        # one builder per entry at a time: a query that comes while the start-up
        # warm-up reads a file waits for that partial instead of reading it again
        self._locks: dict[tuple[str, int, int, ResultFilter], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # filter -> (ids of the partials merged, the merge, the partials: held so
        # that their ids are not reused by new objects while the entry lives)
        self._merged: dict[
            ResultFilter, tuple[tuple[int, ...], TargetAccumulator, list[TargetAccumulator]]
        ] = {}

    def retain(self, paths: Iterable[Path]) -> None:
        """Drop the partials, and the merges holding them, of files no longer
        retained (or recreated under their name): without this a rotated-away
        file's summary stayed until MAX_ENTRIES newer ones pushed it out, and
        with many distinct targets that is most of the process's memory."""
        kept: set[tuple[str, int, int]] = set()
        for path in paths:
            with contextlib.suppress(OSError):  # gone since it was listed
                st = os.stat(path)
                kept.add((path.name, st.st_ino, st.st_dev))
        for key in list(self._entries):
            if key[:3] not in kept:
                self._entries.pop(key, None)
        live = {id(entry.acc) for entry in list(self._entries.values())}
        for flt, (ids, _, _) in list(self._merged.items()):
            if not live.issuperset(ids):
                self._merged.pop(flt, None)

    def held_files(self) -> set[str]:
        """The names of the files whose partials are held (for tests and upkeep)."""
        return {key[0] for key in list(self._entries)}

    def step(
        self, conn: _Conn, path: Path, flt: ResultFilter, deadline: float, goal: int | None
    ) -> tuple[TargetAccumulator | None, int]:
        """One bounded step towards the file's partial over ids up to `goal` (None:
        the file's largest id now). Returns the partial once it covers `goal`, else
        None, with the goal to pass to the next step: a read extends to what was
        there when it started, not chasing ingest."""
        st = os.stat(path)
        key = (path.name, st.st_ino, st.st_dev, flt)
        with self._locks_lock:
            if len(self._locks) > 2 * MAX_ENTRIES:  # left by reads that timed out
                self._locks = {
                    k: v for k, v in self._locks.items() if k in self._entries or v.locked()
                }
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ReadTimedOut(f"waited too long for the summary of {path.name}")
        try:
            return self._extended(conn, path, key, deadline, goal)
        finally:
            lock.release()

    def _extended(
        self,
        conn: _Conn,
        path: Path,
        key: tuple[str, int, int, ResultFilter],
        deadline: float,
        goal: int | None,
    ) -> tuple[TargetAccumulator | None, int]:
        flt = key[3]
        if goal is None:
            goal = int(
                conn.all("SELECT coalesce(max(id), 0) FROM ping_results", {}, deadline)[0][0]
            )
        entry = self._entries.get(key)
        if entry is None and self._seed is not None and flt == ResultFilter():
            kept = self._seed(path)
            if kept is not None:
                entry = _Partial(*kept)
                self._remember(key, entry)
        if entry is None:
            entry = _Partial(0, TargetAccumulator())
            self._remember(key, entry)
        if entry.upto >= goal:
            # shared, not copied: merging reads an accumulator and never changes it
            return entry.acc, goal
        read_to, pending = entry.pending or (entry.upto, TargetAccumulator())
        if read_to < goal:
            upto = min(goal, read_to + self.chunk_rows)
            pending.merge(
                summarize(lambda sql, p: conn.all(sql, p, deadline), flt, (read_to, upto))
            )
            self.chunks_read += 1
            entry.pending = (upto, pending)
            return None, goal
        merged = TargetAccumulator()
        merged.merge(entry.acc)
        merged.merge(pending)
        merged.compact()
        self._remember(key, _Partial(read_to, merged))
        return merged, goal

    def _remember(self, key: tuple[str, int, int, ResultFilter], entry: _Partial) -> None:
        if key not in self._entries and len(self._entries) >= MAX_ENTRIES:
            dropped = next(iter(self._entries))
            self._entries.pop(dropped)
            with self._locks_lock:
                self._locks.pop(dropped, None)
        self._entries[key] = entry

    def merged(
        self, flt: ResultFilter, parts: list[tuple[Path, TargetAccumulator]]
    ) -> TargetAccumulator:
        """The older files' partials merged into one, each target's RTTs in one
        sorted run, kept while the same partials (same objects: same files, no
        new rows) come in. The newest file changes with ingest; the older ones do
        not, so a query merges two accumulators instead of one per file."""
        ids = tuple(id(acc) for _, acc in parts)
        held = self._merged.get(flt)
        if held is not None and held[0] == ids:
            return held[1]
        base = TargetAccumulator()
        for _, acc in parts:
            base.merge(acc)
        base.compact(max_runs=1)
        if len(self._merged) >= MAX_MERGED:
            self._merged.pop(next(iter(self._merged)))
        self._merged[flt] = (ids, base, [acc for _, acc in parts])
        return base
