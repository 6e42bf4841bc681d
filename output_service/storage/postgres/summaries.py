"""Building the closed partitions' summaries ahead of the queries that read them.

Called from the maintenance pass (`schema.seal_partitions`), newest partition
first, within a time budget: after an upgrade, or a loader that filled many old
partitions, the work spreads over several passes instead of delaying start-up.
What is not built yet is built by the first /api/targets that needs it (target
partials) or rendered on the fly (export), so the answers never wait for it.
"""

from __future__ import annotations

import time

from output_service.storage.postgres import closed as closed_parts
from output_service.storage.postgres import export_chunks, target_partials
from output_service.storage.postgres.connection import Conn
from output_service.storage.seam import ResultFilter

BUDGET_S = 5.0  # per maintenance pass; a build once started is finished
BUILD_TIMEOUT_S = 60.0  # one statement of a build


async def build_pending(conn: Conn, budget_s: float | None = BUDGET_S) -> list[str]:
    """Build missing or stale summaries (unfiltered target partials, export runs, and
    the export runs of live partitions behind the cut) until the budget is spent (None:
    all of them); the `partition/kind` names built."""
    started = time.monotonic()
    span = await closed_parts.span(conn)
    everything = ResultFilter()
    targets_key = target_partials.filter_key(everything)
    have_targets = await closed_parts.built(conn, targets_key, span.closed)
    have_export = await closed_parts.built(conn, export_chunks.KIND, span.closed)
    # the partitions still taking rows first: a segment is a few seconds at most
    done: list[str] = []
    while live := await export_chunks.build_live(conn, BUILD_TIMEOUT_S):
        done += [f"{name}/live-export" for name in live]
        if budget_s is not None:  # one segment a pass; all of them when unbudgeted
            break
    for part in span.closed:
        for kind, have in ((targets_key, have_targets), (export_chunks.KIND, have_export)):
            if part.name in have:
                continue
            if budget_s is not None and time.monotonic() - started > budget_s:
                return done
            if kind == export_chunks.KIND:
                await export_chunks.build(conn, part, BUILD_TIMEOUT_S)
            else:
                await target_partials.build(conn, everything, part, BUILD_TIMEOUT_S)
            done.append(f"{part.name}/{kind.split()[0]}")
    return done
