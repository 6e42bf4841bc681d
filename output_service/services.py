"""What the HTTP apps share: config, metrics, the store, the hop loop and the clock.

Built (not started) before the apps; the results app's cleanup context opens
and closes it, and the health app reads the same object, so both ports see
one store and one registry. `build` is the one place that picks the backend
(`storage = "sqlite"` or `"postgres"`): everything after it speaks the seam
(`storage.seam.Store`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.hops import HopFeedback
from output_service.hops import state as hop_state
from output_service.insight.silent import SilentNodes
from output_service.metrics import Metrics
from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import Reads, Store
from output_service.storage.sqlite.reads.upkeep import ReadUpkeep
from output_service.storage.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from output_service.storage.postgres.store import PostgresStore


@dataclass
class Services:
    config: Config
    metrics: Metrics
    storage: Store
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    hops: HopFeedback | None = None  # the SQLite hop loop; None when input_url is ""
    # The query API (the store's reads) and their bound
    read_gate: ReadGate | None = None
    reads: Reads | None = None
    silent_nodes: SilentNodes | None = None
    # /api/hops: the backend's hop tables (postgres) or state.db (SQLite); None when the loop is off
    hop_listing: Callable[[int, int], Awaitable[dict[str, Any]]] | None = None
    # warm summaries and pre-rendered export items (SQLite reads; started by the app)
    read_upkeep: ReadUpkeep | None = None

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Services:
        metrics = Metrics(registry)
        metrics.watch_disk(config.db_dir)
        if config.storage == "postgres":
            # the hop loop lives in the shared database (outbox rows in the results'
            # transaction, a sender per instance): no state.db, no HopFeedback
            pg = _postgres(config, metrics, clock)
            services = cls(config, metrics, pg, clock, clock())
            services.serve_reads(pg.reads, pg.reads.gate)
            if config.input_url:
                services.hop_listing = pg.reads.hops
            return services
        hops = HopFeedback(config, metrics, clock) if config.input_url else None
        store = SqliteStore(
            config, metrics, clock, before_commit=hops.before_commit if hops else None
        )
        services = cls(config, metrics, store, clock, clock(), hops)
        metrics.go_series_from(services.stats)
        services.serve_reads(store.reads, store.read_gate)
        services.read_upkeep = store.read_upkeep
        if hops is not None:  # /api/hops reads state.db through the same read bound
            gate, state_path = store.read_gate, hops.path
            services.hop_listing = lambda limit, offset: gate.run(
                lambda _: hop_state.listing(state_path, limit, offset)
            )
        return services

    def serve_reads(self, reads: Reads, gate: ReadGate) -> None:
        """The query API's reads (any backend's), bounded by `gate`; the silent-nodes gauge."""
        cfg = self.config
        self.read_gate = gate
        self.reads = reads
        self.silent_nodes = SilentNodes(
            lambda: reads.nodes(cfg.node_silent_after_s, self.clock()),
            cfg.node_silent_after_s,
            self.clock,
        )
        self.metrics.silent_nodes.set_function(self.silent_nodes.count)

    def stats(self) -> dict[str, Any]:
        """The `stats` object of /health and /stats: the store's, with the hop totals."""
        stats = self.storage.stats()
        if self.hops is not None:
            stats.update(self.hops.stats())
        return stats


def _postgres(config: Config, metrics: Metrics, clock: Callable[[], float]) -> PostgresStore:
    # imported here: asyncpg is an optional dependency (the `postgres` extra)
    from output_service.storage.postgres.store import PostgresStore

    return PostgresStore(config, metrics, clock)
