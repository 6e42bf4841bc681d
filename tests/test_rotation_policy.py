"""The pure rules: when a rotation is due, which files retention removes, and
how new files are named."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from output_service.storage.sqlite.file_names import (
    created_at,
    file_name_for,
    name_key,
    next_file_name,
)
from output_service.storage.sqlite.rotation_policy import (
    BYTES_PER_MB,
    SECONDS_PER_DAY,
    Reason,
    RotationPolicy,
    beyond_retention,
)

sizes = st.integers(min_value=0, max_value=10**12)
ages = st.floats(min_value=0, max_value=10**9, allow_nan=False)
limits_mb = st.floats(min_value=0.001, max_value=10**5, allow_nan=False)
limits_days = st.floats(min_value=1e-7, max_value=3650, allow_nan=False)
# millisecond steps: a moment a hair under a whole second would round up in datetime
moments = st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda ms: ms / 1000)


@given(sizes, ages, limits_mb, limits_days)
def test_reason_follows_the_limits(size: int, age: float, mb: float, days: float) -> None:
    reason = RotationPolicy.from_limits(mb, days).reason(size, age)
    over_size = size > mb * BYTES_PER_MB
    over_age = age >= days * SECONDS_PER_DAY
    if over_size:
        assert reason is Reason.SIZE
    elif over_age:
        assert reason is Reason.AGE
    else:
        assert reason is None


def test_limits_are_exact_at_the_boundary() -> None:
    policy = RotationPolicy.from_limits(1, 1)
    assert policy.reason(BYTES_PER_MB, 0) is None
    assert policy.reason(BYTES_PER_MB + 1, 0) is Reason.SIZE
    assert policy.reason(0, SECONDS_PER_DAY - 0.001) is None
    assert policy.reason(0, SECONDS_PER_DAY) is Reason.AGE


@given(
    st.lists(st.text("abcdef", min_size=1, max_size=4), unique=True, max_size=12),
    st.integers(min_value=1, max_value=15),
    st.data(),
)
def test_retention_keeps_the_newest_and_never_the_current(
    names: list[str], keep: int, data: st.DataObject
) -> None:
    current = data.draw(st.sampled_from(names)) if names else "none"
    gone = beyond_retention(names, keep, current)
    kept = [n for n in names if n not in gone]
    assert current not in gone
    assert len(kept) == min(len(names), keep)
    # the oldest go first: what goes is a prefix of the other files, oldest first
    others = [n for n in names if n != current]
    assert gone == others[: len(gone)]


@given(moments, moments, st.integers(min_value=0, max_value=5))
def test_next_file_name_sorts_after_the_current(now: float, before: float, extra: int) -> None:
    current = file_name_for(before, set())
    taken = {current} | {file_name_for(before, {current}) for _ in range(extra)}
    name = next_file_name(now, current, taken)
    assert name not in taken
    assert name_key(name) > name_key(current)
    assert created_at(name) == max(int(now), int(before))


def test_same_second_gets_a_suffix() -> None:
    first = next_file_name(1_767_225_600.2, None, set())
    second = next_file_name(1_767_225_600.7, first, {first})
    third = next_file_name(1_767_225_600.9, second, {first, second})
    assert (first, second, third) == (
        "results_2026-01-01_00-00-00.db",
        "results_2026-01-01_00-00-00_1.db",
        "results_2026-01-01_00-00-00_2.db",
    )
