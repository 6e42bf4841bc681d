"""normalize_timestamp's shortcut for seconds it has already checked gives the
same text, and refuses the same input, as the full check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from output_service import models
from output_service.models import _normalize_timestamp_checked, normalize_timestamp

HEADS = ["2026-01-02T03:04:05", "1999-12-31T23:59:59", "2024-02-29T00:00:00"]


def _full(text: str) -> str | None:
    try:
        return _normalize_timestamp_checked(text)
    except ValueError:
        return None


def _fast(text: str) -> str | None:
    try:
        return normalize_timestamp(text)
    except ValueError:
        return None


# what may follow a second already seen: the usual forms, and near misses
TAILS = st.one_of(
    st.just("Z"),
    st.text("0123456789", min_size=0, max_size=11).map(lambda d: f".{d}Z"),
    st.text("0123456789٣", min_size=1, max_size=3).map(lambda d: f".{d}Z"),
    st.sampled_from(["z", ".5z", ".5", ".Z", "+00:00", ".5+02:00", ".5-00:00", "", "ZZ", " Z"]),
    st.text(max_size=12),
)


@given(st.sampled_from(HEADS), TAILS)
def test_the_shortcut_agrees_with_the_full_check(head: str, tail: str) -> None:
    normalize_timestamp(head + "Z")  # the second is now known
    assert head in models._SECONDS_CHECKED
    text = head + tail
    assert _fast(text) == _full(text)


@pytest.mark.parametrize(
    "text", ["2026-02-30T00:00:00Z", "2026-01-02T24:00:00Z", "2026-01-02T03:04:60.5Z"]
)
def test_a_second_that_fails_the_full_check_is_never_remembered(text: str) -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            normalize_timestamp(text)
    assert text[:19] not in models._SECONDS_CHECKED


def test_an_offset_that_moves_the_second_is_not_remembered() -> None:
    assert normalize_timestamp("2030-05-06T07:08:09.25+02:00") == "2030-05-06T05:08:09.250000000Z"
    assert "2030-05-06T07:08:09" not in models._SECONDS_CHECKED
    assert normalize_timestamp("2030-05-06T07:08:09.25Z") == "2030-05-06T07:08:09.250000000Z"
