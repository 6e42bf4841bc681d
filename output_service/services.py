"""What the HTTP apps share: config, metrics, storage and the clock.

Built (not started) before the apps; the results app's cleanup context opens
and closes it, and the health app reads the same object, so both ports see
one storage and one registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.storage import Storage


@dataclass
class Services:
    config: Config
    metrics: Metrics
    storage: Storage
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Services:
        metrics = Metrics(registry)
        return cls(config, metrics, Storage(config, metrics, clock), clock, clock())
