"""When to rotate and which files retention removes: pure functions, no I/O.

Kept apart from the writer so the rules can be property-tested on their own:
the writer only asks "given this size and this age, is a rotation due?" and
"given these files, which ones go?".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SECONDS_PER_DAY = 86400.0
BYTES_PER_MB = 1024 * 1024


class Reason(StrEnum):
    """Why a new results file was started (the label of the rotations metric)."""

    SIZE = "size"
    AGE = "age"
    MANUAL = "manual"
    # at start-up, the newest file records a start after now (the clock stepped
    # back): it is sealed rather than continued
    CLOCK = "clock"


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """The two limits of a results file; both must be positive."""

    max_bytes: float
    max_age_s: float

    @classmethod
    def from_limits(cls, max_size_mb: float, rotation_days: float) -> RotationPolicy:
        return cls(max_size_mb * BYTES_PER_MB, rotation_days * SECONDS_PER_DAY)

    def reason(self, size_bytes: int, age_s: float) -> Reason | None:
        """SIZE once the file (main + WAL) is larger than the limit, AGE once it
        has lived its days; size wins when both hold, since it is the limit that
        protects the disk."""
        if size_bytes > self.max_bytes:
            return Reason.SIZE
        if age_s >= self.max_age_s:
            return Reason.AGE
        return None


def beyond_retention(names: Sequence[str], keep: int, current: str) -> list[str]:
    """The oldest names beyond the newest `keep`, never `current`.

    `names` is oldest first. The current file always counts as one of the kept
    files, so at most `keep` files remain even when it is not the newest name
    (it always is in practice; the rule just never depends on that).
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    others = [n for n in names if n != current]
    room = keep - 1 if current in names else keep
    return others[: max(0, len(others) - room)]
