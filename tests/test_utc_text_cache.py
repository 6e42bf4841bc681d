"""The receive-time text cache says exactly what `utc_text` says, for any moment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from output_service.storage.seam import utc_text
from output_service.storage.sqlite.store import UtcTextCache

# one cache across examples: its kept second is stale, current or a neighbour
CACHE = UtcTextCache()
MOMENTS = st.one_of(
    st.floats(min_value=-1e6, max_value=4e9, allow_nan=False),
    # near a second's end, where microseconds round up into the next second
    st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999995),
    st.integers(0, 4_000_000_000).map(lambda s: s + 0.0000005),
)


@given(MOMENTS)
def test_same_text_as_utc_text(moment: float) -> None:
    assert CACHE.text(moment) == utc_text(moment)


@given(st.integers(1_700_000_000, 1_800_000_000), st.lists(st.integers(0, 999_999)))
def test_same_text_within_one_second(second: int, micros: list[int]) -> None:
    for us in micros:
        moment = second + us / 1e6
        assert CACHE.text(moment) == utc_text(moment)
