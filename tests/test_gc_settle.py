"""gc_settle: start-up's objects frozen out of later collections, gen0 raised."""

from __future__ import annotations

import gc

from output_service import gc_settle


def test_settle_freezes_the_heap_and_raises_gen0() -> None:
    before = gc.get_threshold()
    try:
        kept = [[i] for i in range(1_000)]  # container objects alive at the freeze
        gc_settle.settle()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == (gc_settle.GEN0_THRESHOLD, before[1], before[2])
        # cyclic garbage made after the freeze is still collected
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
