"""The garbage collector settled once the service has started.

Start-up leaves a large heap of objects that live as long as the process
(modules, the apps and their routers, config, metrics). Every full collection
walked all of them again: with 100-result batches at half the best rate, a
generation-2 collection held the GIL for up to 35 ms and was the largest part
of p99 (BENCHMARKS.md, "Speed, round three"). `gc.freeze()` moves them out of
the collector's reach for good, and a larger generation-0 threshold lets a
request's short-lived objects (decoded batches are freed by reference
counting) go without a collection every ~700 allocations. Cyclic garbage is
still collected, less often.
"""

from __future__ import annotations

import gc

# Allocations of container objects (net of frees) between generation-0 runs.
GEN0_THRESHOLD = 50_000


def settle() -> None:
    """Collect once, freeze what is left, and raise generation 0's threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
