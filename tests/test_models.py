"""The wire format: what Go's encoding/json would send must be accepted, the rest named."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from output_service.models import (
    BatchValidationError,
    decode_batch,
    normalize_ip,
    normalize_timestamp,
)
from tests.conftest import make_result


def decode(payload: Any, max_results: int = 10_000) -> Any:
    return decode_batch(json.dumps(payload).encode(), max_results)


def errors_of(payload: Any) -> list[dict[str, Any]]:
    with pytest.raises(BatchValidationError) as info:
        decode(payload)
    return [e.to_json() for e in info.value.errors]


def test_array_of_results_decodes_with_hops() -> None:
    batch = decode([make_result(hops=3), make_result("2001:DB8::1")])
    assert [r.ip for r in batch.results] == ["192.0.2.1", "2001:db8::1"]
    trace = batch.results[0].traceroute
    assert trace is not None and trace.hops is not None
    assert [h.ip for h in trace.hops] == ["10.0.0.1", "10.1.0.1", "10.2.0.1"]
    assert batch.raw == {}


def test_single_object_is_a_batch_of_one() -> None:
    assert len(decode(make_result()).results) == 1


def test_keys_match_case_insensitively_like_go() -> None:
    item = {
        "IP": "192.0.2.7",
        "Sent": 3,
        "RECEIVED": 2,
        "Packet_Loss": 33.3,
        "avg_RTT": 5,
        "TimeStamp": "2026-01-02T03:04:05Z",
        "Traceroute": {"Method": "tcp", "Hops": [{"TTL": 1, "Ip": "10.0.0.1", "RTT": 9}]},
    }
    result = decode([item]).results[0]
    assert (result.ip, result.sent, result.received, result.avg_rtt) == ("192.0.2.7", 3, 2, 5)
    assert result.traceroute is not None and result.traceroute.method == "tcp"
    assert result.traceroute.hops is not None and result.traceroute.hops[0].ttl == 1


def test_exact_key_wins_over_other_case() -> None:
    item = make_result()
    item["IP"] = "not used"
    assert decode([item]).results[0].ip == "192.0.2.1"


def test_unknown_fields_are_kept_as_raw_json() -> None:
    item = make_result(node_version="1.2.3")
    item["traceroute"] = {"method": "icmp", "hops": [{"ttl": 1, "ip": "10.0.0.1", "asn": 64500}]}
    batch = decode([make_result(), item])
    assert 0 not in batch.raw
    assert json.loads(batch.raw[1]) == item


def test_nulls_and_missing_optionals_take_go_zero_values() -> None:
    item = make_result(error=None)
    item["traceroute"] = {"hops": None, "error": None}
    result = decode([item]).results[0]
    assert not result.error
    assert result.traceroute is not None and not result.traceroute.hops


def test_timed_out_hop_may_lack_an_ip() -> None:
    item = make_result()
    item["traceroute"] = {
        "method": "icmp",
        "hops": [{"ttl": 1, "timeout": True}, {"ttl": 2, "ip": "", "rtt": 0, "timeout": True}],
    }
    hops = decode([item]).results[0].traceroute.hops  # type: ignore[union-attr]
    assert hops is not None and [h.ip for h in hops] == ["", ""]


def test_every_bad_item_and_field_is_named() -> None:
    bad_ip = make_result(ip="300.1.2.3")
    negative = make_result()
    negative["sent"] = -1
    missing = make_result()
    del missing["timestamp"]
    bad_hop = make_result(hops=2)
    bad_hop["traceroute"]["hops"][1]["ttl"] = "two"
    errors = errors_of([make_result(), bad_ip, negative, missing, "text", bad_hop])
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "ip"),
        (2, "sent"),
        (3, "timestamp"),
        (4, ""),
        (5, "traceroute.hops[1].ttl"),
    ]
    assert all(e["reason"] for e in errors)


@pytest.mark.parametrize("payload", [3, "x", True])
def test_body_must_be_array_or_object(payload: Any) -> None:
    assert errors_of(payload)[0]["index"] is None


def test_malformed_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(BatchValidationError) as info:
        decode_batch(b'[{"ip": ', 10)
    assert "malformed JSON" in info.value.errors[0].reason


def test_batch_size_limit() -> None:
    with pytest.raises(BatchValidationError):
        decode([make_result()] * 3, max_results=2)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000000Z"),
        ("2026-01-02T03:04:05.5Z", "2026-01-02T03:04:05.500000000Z"),
        ("2026-01-02T03:04:05.123456789+02:00", "2026-01-02T01:04:05.123456789Z"),
        ("2026-01-01T00:30:00-01:30", "2026-01-01T02:00:00.000000000Z"),
        ("2026-03-01t00:00:00.1z", "2026-03-01T00:00:00.100000000Z"),
    ],
)
def test_timestamps_become_fixed_width_utc(given: str, stored: str) -> None:
    assert normalize_timestamp(given) == stored


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01T00:00:00Z",
        "2026-01-02 03:04:05Z",
        "2026-01-02T03:04:05",
        "2026-01-02T03:04:05.1234567890Z",
        "yesterday",
        "2026-02-30T00:00:00Z",
    ],
)
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_timestamp(text)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(UTC)
    ),
    st.integers(-23 * 60, 23 * 60),
    st.integers(0, 999_999_999),
)
def test_any_offset_and_nanoseconds_round_trip_to_the_same_instant(
    moment: datetime, offset_minutes: int, nanos: int
) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(microsecond=0).astimezone(zone)
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}" + local.strftime("%z")
    text = text[:-2] + ":" + text[-2:]
    stored = normalize_timestamp(text)
    assert stored == moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def go_ip_string(packed: bytes) -> str:
    """Go's net.IP.String(), written out from its rules: an IPv4 (or IPv4-mapped)
    address as a dotted quad; otherwise hex groups with the longest run (first on a
    tie) of two or more zero groups written as `::`."""
    if len(packed) == 4 or packed[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in packed[-4:])
    groups = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len, i = -1, 1, 0
    while i < 8:
        j = i
        while j < 8 and groups[j] == 0:
            j += 1
        if j - i > best_len:
            best_start, best_len = i, j - i
        i = j + 1
    if best_start < 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


@given(st.ip_addresses())
def test_ip_addresses_normalise_to_what_go_prints(address: Any) -> None:
    expected = go_ip_string(address.packed)
    assert normalize_ip(str(address)) == expected
    assert normalize_ip(address.exploded) == expected


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_targets_and_hops_are_the_ipv4_host(address: Any) -> None:
    mapped = f"::ffff:{address}"
    item = make_result(ip=mapped, hops=1)
    item["traceroute"]["hops"][0]["ip"] = mapped.upper()
    result = decode([item]).results[0]
    assert result.ip == str(address)
    assert result.traceroute.hops[0].ip == str(address)


def test_hop_text_that_is_no_address_is_kept_as_sent() -> None:
    item = make_result(hops=2)
    item["traceroute"]["hops"][0]["ip"] = "*"
    item["traceroute"]["hops"][1]["ip"] = "2001:DB8::1"
    hops = decode([item]).results[0].traceroute.hops
    assert [h.ip for h in hops] == ["*", "2001:db8::1"]


def test_null_body_is_an_empty_batch() -> None:
    batch = decode_batch(b"null", 10)
    assert batch.results == [] and batch.raw == {}


def test_two_bad_fields_of_one_item_are_both_named() -> None:
    bad_hops = make_result(hops=3)
    bad_hops["traceroute"]["hops"][0]["ttl"] = -1
    bad_hops["traceroute"]["hops"][2]["rtt"] = "slow"
    errors = errors_of([{"ip": "x", "sent": -1}, bad_hops])
    assert [(e["index"], e["field"]) for e in errors] == [
        (0, "sent"),
        (0, "received"),
        (0, "packet_loss"),
        (0, "avg_rtt"),
        (0, "timestamp"),
        (0, "ip"),
        (1, "traceroute.hops[0].ttl"),
        (1, "traceroute.hops[2].rtt"),
    ]


def test_error_cap_holds_with_many_bad_fields() -> None:
    errors = errors_of([{"sent": "x"} for _ in range(200)])
    assert len(errors) == 100


def test_hops_null_is_kept_in_raw_and_an_empty_list_is_not() -> None:
    null_hops = make_result()
    null_hops["traceroute"] = {"method": "icmp", "completed": False, "hops": None}
    empty = make_result()
    empty["traceroute"] = {"method": "icmp", "completed": False, "hops": []}
    batch = decode([null_hops, empty])
    assert list(batch.raw) == [0]
    assert json.loads(batch.raw[0])["traceroute"]["hops"] is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["ip", "IP", "sent", "hops", "ttl", "timestamp", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_json_is_accepted_or_refused_with_reasons(value: Any) -> None:
    body = msgspec.json.encode(value)
    try:
        batch = decode_batch(body, 100)
    except BatchValidationError as exc:
        assert exc.errors and all(e.reason for e in exc.errors)
    else:
        assert all(r.timestamp.endswith("Z") for r in batch.results)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(body: bytes) -> None:
    with contextlib.suppress(BatchValidationError):
        decode_batch(body, 100)
