"""`Reads` over the retained SQLite results files.

Each read asks `files()` for the retained paths (newest first) and reads each
file on its own read-only connection, through the `ReadGate`: a bounded number
of read threads, and a deadline per step that a progress handler enforces by
interrupting the statement. Every statement is run to completion before the
next one starts, and no transaction is opened around them, so a read never
holds a WAL snapshot longer than one statement: the writer's checkpoints keep
up, and the WAL stays near `wal_autocheckpoint` however many readers there are.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from output_service.insight import cursor as cursors
from output_service.insight.routes import Observation, summarize
from output_service.insight.summaries import TargetAccumulator, merge_nodes, series, target_page
from output_service.storage.read_gate import ReadGate, ReadTimedOut, Steps
from output_service.storage.seam import (
    BadQuery,
    ResultFilter,
    ResultPage,
    SeriesQuery,
    TargetQuery,
)
from output_service.storage.sqlite import connect
from output_service.storage.sqlite.file_names import name_key
from output_service.storage.sqlite.reads import queries
from output_service.storage.sqlite.reads.partials import PartialCache
from output_service.storage.sqlite.reads.prerender import SideFiles

ListFiles = Callable[[], Sequence[Path]]
EXPORT_CHUNK = 2000  # results per statement of an export
_PROGRESS_OPS = 20_000  # VM steps between deadline checks


class _Conn:
    """A read-only connection whose statements stop at `deadline`."""

    def __init__(self, path: Path, side: Path | None = None) -> None:
        self.conn = connect.read_only(path, busy_timeout_ms=2000, any_thread=True)
        self.has_side = False
        if side is not None:  # the file's pre-rendered items, as schema `side`
            try:
                self.conn.execute("ATTACH ? AS side", (f"{side.resolve().as_uri()}?mode=ro",))
                self.has_side = True
            except sqlite3.OperationalError:
                pass  # gone since it was checked: the slow path serves this file
        self.deadline = time.monotonic() + 3600.0
        self.conn.set_progress_handler(self._late, _PROGRESS_OPS)

    def _late(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def all(self, sql: str, params: dict[str, Any], deadline: float) -> list[Any]:
        self.deadline = deadline
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise ReadTimedOut(str(exc)) from None
            raise

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def _opened(path: Path, side: Path | None = None) -> Iterator[_Conn | None]:
    """A connection, or None when the file went away (retention) since it was listed."""
    try:
        conn = _Conn(path, side)
    except sqlite3.OperationalError:
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


class SqliteReads:
    def __init__(self, files: ListFiles, gate: ReadGate, sides: SideFiles | None = None) -> None:
        self._files = files
        self._gate = gate
        self._partials = PartialCache(None if sides is None else sides.summary)
        self._sides = sides

    @property
    def partial_cache(self) -> PartialCache:
        """The per-file target summaries (its counters are read by tests)."""
        return self._partials

    # -- results ---------------------------------------------------------------

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        page = await self.results_page(ResultFilter(ip=ip), limit, None)
        return page.items

    async def results_page(self, flt: ResultFilter, limit: int, cursor: str | None) -> ResultPage:
        start = _decode(cursor)

        def page(deadline: float) -> tuple[list[tuple[str, int, str]], list[dict[str, Any]]]:
            # decoded on the read thread, not the loop ingest runs on
            rows = self._page(flt, limit + 1, start, deadline)
            return rows, msgspec.json.decode("[" + ",".join(t for _, _, t in rows[:limit]) + "]")

        rows, items = await self._gate.run(page)
        next_cursor = None
        if len(rows) > limit:
            name, last_id, _ = rows[limit - 1]
            next_cursor = cursors.encode(cursors.Position(name, last_id))
        return ResultPage(items, next_cursor)

    def _page(
        self, flt: ResultFilter, want: int, start: cursors.Position | None, deadline: float
    ) -> list[tuple[str, int, str]]:
        found: list[tuple[str, int, str]] = []
        for path, before in self._from(start):
            with _opened(path) as conn:
                if conn is None:
                    continue
                sql, params = queries.items(flt, before)
                params.update(file=path.name, limit=want - len(found))
                found += [(path.name, i, t) for i, t in conn.all(sql, params, deadline)]
            if len(found) >= want:
                break
        return found

    def _from(self, start: cursors.Position | None) -> list[tuple[Path, int | None]]:
        """The files to read from `start` on, newest first, each with its id bound."""
        paths = list(self._files())
        if start is None:
            return [(p, None) for p in paths]
        key = name_key(start.file)
        out: list[tuple[Path, int | None]] = []
        for p in paths:
            if p.name == start.file:
                out.append((p, start.id))
            elif name_key(p.name) < key:
                out.append((p, None))
        return out

    async def iter_results(self, flt: ResultFilter) -> AsyncIterator[list[str]]:
        """Every match as JSON text, newest first, in chunks of EXPORT_CHUNK; each
        chunk is one short statement, so memory and snapshots stay small."""
        async with self._gate.slot() as steps:
            for path, before in self._from(None):
                side = None if self._sides is None else self._sides.ready(path)
                # a pre-rendered item lacks its file key and closing brace
                tail = ',"file":' + msgspec.json.encode(path.name).decode() + "}"
                with _opened(path, side) as conn:
                    if conn is None:
                        continue
                    while True:
                        if not conn.has_side:
                            sql, params = queries.items(flt, before)
                        else:
                            sql, params = queries.prerendered(flt, before)
                        params.update(file=path.name, limit=EXPORT_CHUNK)
                        c = conn
                        rows = await steps.run(lambda d: c.all(sql, params, d))  # noqa: B023
                        if not rows:
                            break
                        if not conn.has_side:
                            yield [text for _, text in rows]
                        else:
                            yield [text + tail for _, text in rows]
                        if len(rows) < EXPORT_CHUNK:
                            break
                        before = rows[-1][0]

    # -- summaries ----------------------------------------------------------------

    async def targets(self, query: TargetQuery) -> list[dict[str, Any]]:
        def answer(deadline: float) -> list[dict[str, Any]]:
            if not parts:
                return []
            # the newest file (the one ingest extends) with the older ones' merge
            older = self._partials.merged(query.filter, parts[1:])
            return target_page(parts[0][1], older, query.sort, query.offset, query.limit)

        async with self._gate.slot() as steps:
            parts = await self._partials_of(steps, query.filter)
            return await steps.run(answer)

    async def _partials_of(
        self, steps: Steps, flt: ResultFilter
    ) -> list[tuple[Path, TargetAccumulator]]:
        """Each file's cached partial, extended by the rows that arrived since, in
        bounded steps (partials.py), so a cold start or a long ingest since the
        last query is many short steps, paced while ingest is busy."""
        parts: list[tuple[Path, TargetAccumulator]] = []
        files = self._files()
        self._partials.retain(files)
        for path in files:
            acc = await self._extend(steps, path, flt)
            if acc is not None:
                parts.append((path, acc))
        return parts

    async def _extend(
        self, steps: Steps, path: Path, flt: ResultFilter
    ) -> TargetAccumulator | None:
        """One file's partial, step by step; None when the file went away."""
        goal: int | None = None
        while True:
            got = await steps.run(functools.partial(self._partial_step, path, flt, goal))
            if got is None:
                return None
            acc, goal = got
            if acc is not None:
                return acc

    def _partial_step(
        self, path: Path, flt: ResultFilter, goal: int | None, deadline: float
    ) -> tuple[TargetAccumulator | None, int] | None:
        with _opened(path) as conn:
            return None if conn is None else self._partials.step(conn, path, flt, deadline, goal)

    async def warm_targets(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Build the partials of /api/targets over everything, and the merge of
        the older files' ones, so that the first query does not pay for them
        (the upkeep task calls this at start-up and then now and then). Each
        file is one read through the bound; ReadBusy reaches the caller."""
        flt = ResultFilter()
        parts: list[tuple[Path, TargetAccumulator]] = []
        files = self._files()
        self._partials.retain(files)
        for path in files:
            if stopping():
                return
            async with self._gate.slot() as steps:
                acc = await self._extend(steps, path, flt)
            if acc is not None:
                parts.append((path, acc))
        await self._gate.run(lambda _: self._partials.merged(flt, parts[1:]))

    async def target(self, query: SeriesQuery) -> dict[str, Any] | None:
        def answer(deadline: float) -> dict[str, Any] | None:
            rows = self._each(queries.series_rows, query.filter, deadline)
            return series(query.ip, query.step_s, rows) if rows else None

        return await self._gate.run(answer)  # the series built on the read thread too

    async def routes(self, ip: str, flt: ResultFilter) -> dict[str, Any]:
        def answer(deadline: float) -> dict[str, Any]:
            rows = self._each(queries.route_rows, flt, deadline)
            observations = [Observation(node, ts, _path(hops or "")) for ts, node, hops in rows]
            return {"ip": ip, **summarize(observations)}

        return await self._gate.run(answer)  # the paths summarised on the read thread too

    def _each(
        self,
        make: Callable[[ResultFilter], tuple[str, dict[str, Any]]],
        flt: ResultFilter,
        deadline: float,
    ) -> list[Any]:
        out: list[Any] = []
        sql, params = make(flt)
        for path in self._files():
            with _opened(path) as conn:
                if conn is not None:
                    out += conn.all(sql, params, deadline)
        return out

    async def nodes(self, silent_after_s: float, now: float) -> list[dict[str, Any]]:
        return await self._gate.run(lambda d: merge_nodes(self._node_rows(d), silent_after_s, now))

    def _node_rows(self, deadline: float) -> list[tuple[list[Any], list[Any]]]:
        out = []
        for path in self._files():
            with _opened(path) as conn:
                if conn is not None:
                    out.append(
                        (
                            conn.all(queries.NODE_BATCHES, {}, deadline),
                            conn.all(queries.NODE_RESULTS, {}, deadline),
                        )
                    )
        return out


def _decode(cursor: str | None) -> cursors.Position | None:
    if cursor is None:
        return None
    try:
        return cursors.decode(cursor)
    except cursors.BadCursor as exc:
        raise BadQuery(str(exc)) from None


def _path(hops: str) -> tuple[str | None, ...]:
    """'ip timeout' lines (by ttl) -> a path; a timeout or an empty ip is None."""
    out: list[str | None] = []
    for line in hops.split("\n") if hops else []:
        ip, _, timeout = line.rpartition(" ")
        out.append(None if timeout == "1" or not ip else ip)
    return tuple(out)
