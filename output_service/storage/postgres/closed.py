"""Which partitions no longer take rows, and the summaries kept of them.

A results partition holds one interval of arrival time (`received_at`, set by
the database at the start of the writing transaction). Once the interval is
over, and a grace period longer than any writing transaction has passed, no
row can land there any more: what is computed from it stays true. The query
API keeps summaries of such closed partitions (target partials, pre-rendered
export items) in tables of their own, built once by whichever instance gets
there first (under an advisory lock) and read by all of them.

Each summary records the partition's largest id when it was built, and is
only used while that is still the largest id: rows put into an old partition
by hand (or by a loader that stamps old arrival times) make it stale, and it
is rebuilt. Retention (`schema.drop_expired`) drops summaries with their partitions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from output_service.storage.postgres import schema
from output_service.storage.postgres.connection import Conn
from output_service.storage.postgres.queries import Received

# Longer than any writer transaction (a group commit takes well under a second;
# the statement timeout is far below this).
GRACE = dt.timedelta(minutes=2)
SUMMARY_LOCK = 0x73756D6D  # "summ": pg_advisory_xact_lock(SUMMARY_LOCK, hashtext(...))


@dataclass(frozen=True, slots=True)
class Closed:
    """A closed ping_results partition with rows, and its largest id now."""

    part: schema.Partition
    top: int

    @property
    def name(self) -> str:
        return self.part.name

    @property
    def received(self) -> Received:
        return Received(self.part.start, self.part.end)


@dataclass(frozen=True, slots=True)
class Span:
    """The closed partitions (newest first) and where the rows still arriving start."""

    closed: list[Closed]
    live: Received
    now: dt.datetime  # the database's clock (transaction start)


async def span(conn: Conn, grace: dt.timedelta = GRACE) -> Span:
    """The partitions as the database sees them now. The live range starts at the
    oldest partition that is not closed (all rows after the closed ones)."""
    now: dt.datetime = await conn.fetchval("SELECT now()")
    parts = await schema.partitions(conn)
    done = [p for p in parts if p.end + grace <= now]
    if not done:
        return Span([], Received(), now)
    tops = await conn.fetch(
        " UNION ALL ".join(
            f'SELECT {i} AS i, (SELECT max(id) FROM "{p.name}") AS top' for i, p in enumerate(done)
        )
    )
    top_of = {r["i"]: r["top"] for r in tops}
    closed = [Closed(p, top_of[i]) for i, p in enumerate(done) if top_of[i] is not None]
    live_from = max(p.end for p in done)
    closed.sort(key=lambda c: c.part.start, reverse=True)
    return Span(closed, Received(live_from, None), now)


async def built(conn: Conn, kind: str, closed: list[Closed]) -> set[str]:
    """The closed partitions whose `kind` summary is up to date (same largest id)."""
    if not closed:
        return set()
    rows = await conn.fetch(
        "SELECT part, max_id FROM partition_summaries WHERE kind = $1 AND part = ANY($2::text[])",
        kind,
        [c.name for c in closed],
    )
    stored = {r["part"]: r["max_id"] for r in rows}
    return {c.name for c in closed if stored.get(c.name) == c.top}


async def begin_build(conn: Conn, kind: str, closed: Closed) -> bool:
    """Inside a transaction: take this summary's lock and clear a stale one. False when
    another instance built it meanwhile (nothing to do). Read committed, so the check
    after the lock sees what the other instance committed."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", SUMMARY_LOCK, f"{closed.name}/{kind}"
    )
    max_id = await conn.fetchval(
        "SELECT max_id FROM partition_summaries WHERE part = $1 AND kind = $2", closed.name, kind
    )
    if max_id == closed.top:
        return False
    await conn.execute(
        "DELETE FROM partition_summaries WHERE part = $1 AND kind = $2", closed.name, kind
    )
    return True


async def finish_build(conn: Conn, kind: str, closed: Closed) -> None:
    await conn.execute(
        "INSERT INTO partition_summaries (part, kind, max_id) VALUES ($1, $2, $3)",
        closed.name,
        kind,
        closed.top,
    )


async def holding(conn: Conn, since: str | None, until: str | None) -> list[Received]:
    """The partitions holding a measurement `timestamp` in [since, until), by each
    partition's first and last timestamp (two probes of its timestamp index). Read
    in the same snapshot as the statement that uses it, this is exact: a page over
    an old hour then reads the partitions of that hour, not every partition from
    the newest down (which is what `ORDER BY id DESC LIMIT` makes the planner do)."""
    parts = await schema.partitions(conn)
    if not parts:
        return []
    rows = await conn.fetch(
        " UNION ALL ".join(
            f'SELECT {i} AS i, (SELECT min(timestamp) FROM "{p.name}") AS first,'
            f' (SELECT max(timestamp) FROM "{p.name}") AS last'
            for i, p in enumerate(parts)
        )
    )
    out = []
    for r in rows:
        if r["first"] is None:
            continue
        if (since is None or r["last"] >= since) and (until is None or r["first"] < until):
            part = parts[r["i"]]
            out.append(Received(part.start, part.end))
    return out
