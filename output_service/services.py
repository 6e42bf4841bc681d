"""What the HTTP apps share: config, metrics, storage, the hop loop and the clock.

Built (not started) before the apps; the results app's cleanup context opens
and closes it, and the health app reads the same object, so both ports see
one storage and one registry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.hops import HopFeedback
from output_service.insight.silent import SilentNodes
from output_service.metrics import Metrics
from output_service.storage.read_gate import ReadGate
from output_service.storage.seam import Reads
from output_service.storage.sqlite.file_names import results_files
from output_service.storage.sqlite.reads.reads import SqliteReads
from output_service.storage.sqlite.store import Storage

if TYPE_CHECKING:
    from output_service.storage.postgres.compat import PgStorage


@dataclass
class Services:
    config: Config
    metrics: Metrics
    storage: Storage | PgStorage
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    hops: HopFeedback | None = None  # None when input_url is "" (feedback off)
    # The query API: every read endpoint goes through read_gate (see build_reads)
    read_gate: ReadGate | None = None
    reads: Reads | None = None
    silent_nodes: SilentNodes | None = None
    # /api/hops from a backend that keeps the hop tables itself (postgres)
    hop_listing: Callable[[int, int], Awaitable[dict[str, Any]]] | None = None
    # /recent through the read bound: set where the backend's reads are wired
    recent: Callable[[int, str | None], Awaitable[list[dict[str, Any]]]] | None = None

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
            services.serve_reads(pg.store.reads, pg.store.reads.gate)
            services.recent = pg.store.reads.recent  # takes a gate slot itself
            if config.input_url:
                services.hop_listing = pg.store.reads.hops
            return services
        hops = HopFeedback(config, metrics, clock) if config.input_url else None
        storage = Storage(
            config, metrics, clock, before_commit=hops.before_commit if hops else None
        )
        services = cls(config, metrics, storage, clock, clock(), hops)
        metrics.go_series_from(services.stats)
        services.build_reads()
        return services

    def build_reads(self) -> None:
        """The SQLite reads over every retained file (db_dir, newest first)."""
        cfg = self.config
        gate = ReadGate(cfg.max_concurrent_reads, cfg.read_query_timeout_s)
        self.serve_reads(SqliteReads(lambda: results_files(cfg.db_dir)[::-1], gate), gate)
        storage = self.storage
        # /recent's reader runs on its own aiosqlite connection: bound it here
        self.recent = lambda limit, ip: gate.bound(lambda: storage.recent(limit, ip))

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
        """The `stats` object of /health and /stats: storage's, with the hop totals."""
        stats = self.storage.stats()
        if self.hops is not None:
            stats.update(self.hops.stats())
        return stats


def _postgres(config: Config, metrics: Metrics, clock: Callable[[], float]) -> PgStorage:
    # imported here: asyncpg is an optional dependency (the `postgres` extra)
    from output_service.storage.postgres.compat import PgStorage
    from output_service.storage.postgres.store import PostgresStore

    return PgStorage(PostgresStore(config, metrics, clock))
