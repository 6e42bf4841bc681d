"""Nearest-rank percentiles and epoch-aligned time buckets.

Nearest rank (the smallest value with at least p% of values at or below it) is
what SmokePing and most operators expect: every percentile is a value that was
actually measured, so the numbers in a reply can be found in the stored rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

STEPS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
# Aim for at most this many buckets when the caller does not name a step.
MAX_AUTO_BUCKETS = 500


def nearest_rank(ordered: Sequence[int], pct: float) -> int | None:
    """The nearest-rank `pct` percentile of an ascending sequence (None if empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def choose_step(range_s: float) -> int:
    """The smallest step that keeps a range within MAX_AUTO_BUCKETS buckets."""
    for seconds in STEPS.values():
        if range_s / seconds <= MAX_AUTO_BUCKETS:
            return seconds
    return STEPS["1d"]


def bucket_start(epoch_s: float, step_s: int) -> int:
    """The start of the epoch-aligned bucket holding `epoch_s` (UTC days for 1d)."""
    return int(epoch_s // step_s) * step_s


def epoch_of(text: str) -> float:
    """Seconds since the epoch of a stored timestamp (`...SS.fffffffffZ`)."""
    return datetime.fromisoformat(text[:26] + "+00:00").timestamp()


def rfc3339(epoch_s: float) -> str:
    """A bucket boundary as RFC 3339 UTC text, whole seconds."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def loss_pct(mean_packet_loss: float | None) -> float | None:
    """Mean packet loss rounded for display (stored per result as 0..100)."""
    return None if mean_packet_loss is None else round(mean_packet_loss, 3)
