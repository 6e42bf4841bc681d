"""What the HTTP apps share: config, metrics, storage, the hop loop and the clock.

Built (not started) before the apps; the results app's cleanup context opens
and closes it, and the health app reads the same object, so both ports see
one storage and one registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.hops import HopFeedback
from output_service.metrics import Metrics
from output_service.storage import Storage


@dataclass
class Services:
    config: Config
    metrics: Metrics
    storage: Storage
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
        metrics.watch_disk(config.db_dir)
        hops = HopFeedback(config, metrics, clock) if config.input_url else None
        storage = Storage(
            config, metrics, clock, before_commit=hops.before_commit if hops else None
        )
        return cls(config, metrics, storage, clock, clock(), hops)

    def stats(self) -> dict[str, Any]:
        """The `stats` object of /health and /stats: storage's, with the hop totals."""
        stats = self.storage.stats()
        if self.hops is not None:
            stats.update(self.hops.stats())
        return stats
