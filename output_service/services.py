"""What the HTTP apps share: config, metrics, storage, the hop loop and the clock.

Built (not started) before the apps; the results app's cleanup context opens
and closes it, and the health app reads the same object, so both ports see
one storage and one registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.hops import HopFeedback
from output_service.metrics import Metrics
from output_service.storage import Storage

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

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Services:
        metrics = Metrics(registry)
        if config.storage == "postgres":
            # the hop loop lives in the shared database (outbox rows in the results'
            # transaction, a sender per instance): no state.db, no HopFeedback
            return cls(config, metrics, _postgres(config, metrics, clock), clock, clock())
        hops = HopFeedback(config, metrics, clock) if config.input_url else None
        storage = Storage(
            config, metrics, clock, before_commit=hops.before_commit if hops else None
        )
        services = cls(config, metrics, storage, clock, clock(), hops)
        metrics.go_series_from(services.stats)
        return services

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
