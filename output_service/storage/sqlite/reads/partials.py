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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from output_service.insight.summaries import TargetAccumulator
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


class PartialCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, int, int, ResultFilter], _Partial] = {}
        # filter -> (ids of the partials merged, the merge, the partials: held so
        # that their ids are not reused by new objects while the entry lives)
        self._merged: dict[
            ResultFilter, tuple[tuple[int, ...], TargetAccumulator, list[TargetAccumulator]]
        ] = {}

    def get(self, conn: _Conn, path: Path, flt: ResultFilter, deadline: float) -> TargetAccumulator:
        st = os.stat(path)
        key = (path.name, st.st_ino, st.st_dev, flt)
        entry = self._entries.get(key)
        top = int(conn.all("SELECT coalesce(max(id), 0) FROM ping_results", {}, deadline)[0][0])
        if entry is None:
            entry = _Partial(0, TargetAccumulator())
        if top > entry.upto:
            delta = TargetAccumulator()
            for make, add in (
                (queries.target_totals, delta.add_totals),
                (queries.target_rtts, delta.add_rtts),
                (queries.target_nodes, delta.add_nodes),
            ):
                sql, params = make(flt, (entry.upto, top))
                add(conn.all(sql, params, deadline))
            merged = TargetAccumulator()
            merged.merge(entry.acc)
            merged.merge(delta)
            merged.compact()
            entry = _Partial(top, merged)
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = entry
        # shared, not copied: merging reads an accumulator and never changes it
        return entry.acc

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
