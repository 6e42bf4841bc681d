"""Per-file partial target summaries, cached and extended by id.

Rows of a results file are never updated, only appended (ids grow). So the
summary of rows with id <= M is fixed once computed: the cache keeps, per
(file identity, filter), a `TargetAccumulator` over ids up to M, and a later
query only reads the rows with id > M and merges them in. A sealed file is
read once; the live file costs only what arrived since the last query. This is
the rollup /api/targets needs to answer over a week of data in well under a
second, built by the reader alone: the writer's transaction stays as it is.

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


@dataclass(slots=True)
class _Partial:
    upto: int
    acc: TargetAccumulator


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
    def __init__(self, seed: Seed | None = None) -> None:
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

    def get(self, conn: _Conn, path: Path, flt: ResultFilter, deadline: float) -> TargetAccumulator:
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
            return self._extended(conn, path, key, deadline)
        finally:
            lock.release()

    def _extended(
        self, conn: _Conn, path: Path, key: tuple[str, int, int, ResultFilter], deadline: float
    ) -> TargetAccumulator:
        flt = key[3]
        entry = self._entries.get(key)
        top = int(conn.all("SELECT coalesce(max(id), 0) FROM ping_results", {}, deadline)[0][0])
        if entry is None and self._seed is not None and flt == ResultFilter():
            kept = self._seed(path)
            if kept is not None:
                entry = _Partial(*kept)
                self._remember(key, entry)
        if entry is None:
            entry = _Partial(0, TargetAccumulator())
        if top > entry.upto:
            delta = summarize(lambda sql, p: conn.all(sql, p, deadline), flt, (entry.upto, top))
            merged = TargetAccumulator()
            merged.merge(entry.acc)
            merged.merge(delta)
            merged.compact()
            entry = _Partial(top, merged)
            self._remember(key, entry)
        # shared, not copied: merging reads an accumulator and never changes it
        return entry.acc

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
