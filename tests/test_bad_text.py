"""Text that is not what it looks like: invalid UTF-8 anywhere in a body (plain or
gzipped), non-ASCII digits in a timestamp, a zone index in an address. Each gets a
JSON 400 and stores nothing; invalid UTF-8 names its byte offset and is counted."""

from __future__ import annotations

import gzip
import json

import pytest

from output_service.hops.extract import hop_address
from tests.conftest import Running, make_result
from tests.test_limits import rejected

JSON = {"Content-Type": "application/json"}
GOOD = json.dumps([make_result(error="ERR")]).encode()

# (where, body): each has exactly one bad sequence, found by replacing a marker
CASES = {
    "a lone 0xff in an array": b'["\xff"]',
    "Latin-1 in error": GOOD.replace(b"ERR", b"caf\xe9"),
    "in a key": GOOD.replace(b'"error"', b'"err\xffor"'),
    "in an unknown field": GOOD.replace(b'"error"', b'"note": "\x80", "error"'),
    "overlong NUL": GOOD.replace(b"ERR", b"\xc0\x80"),
    "CESU-8 surrogate": GOOD.replace(b"ERR", b"\xed\xa0\x80\xed\xb0\x80"),
    "past U+10FFFF": GOOD.replace(b"ERR", b"\xf4\x90\x80\x80"),
    "cut multi-byte": GOOD.replace(b"ERR", b"\xe2\x82"),
}


def first_bad_byte(body: bytes) -> int:
    """Computed here without Python's decoder: the first byte that does not start a
    well-formed UTF-8 sequence (RFC 3629 table 3-7)."""
    i = 0
    while i < len(body):
        b = body[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            need = 2
            low, high = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F)}.get(b, (0x80, 0xBF))
        elif 0xF0 <= b <= 0xF4:
            need = 3
            low, high = {0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(b, (0x80, 0xBF))
        else:
            return i
        tail = body[i + 1 : i + 1 + need]
        if len(tail) < need or not low <= tail[0] <= high:
            return i
        if any(not 0x80 <= c <= 0xBF for c in tail[1:]):
            return i
        i += need + 1
    return -1


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(CASES))
async def test_invalid_utf8_is_a_400_naming_the_offset(
    service: Running, case: str, gzipped: bool
) -> None:
    body = CASES[case]
    offset = first_bad_byte(body)
    assert offset >= 0
    headers = {"Content-Type": "application/json"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    resp = await service.results.post(
        "/results", data=gzip.compress(body) if gzipped else body, headers=headers
    )
    assert resp.status == 400
    reply = await resp.json()
    assert reply["status"] == "error"
    assert reply["offset"] == offset
    assert f"offset {offset}" in reply["error"]
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]
    assert rejected(service.services, "invalid_utf8") == 1


async def test_valid_non_ascii_text_is_stored(service: Running) -> None:
    body = GOOD.replace(b"ERR", "caf\u00e9 \U0001f600 \u0661\u0662\u0663".encode())
    resp = await service.results.post("/results", data=body, headers=JSON)
    assert resp.status == 200
    assert service.rows("SELECT error FROM ping_results") == [
        ("caf\u00e9 \U0001f600 \u0661\u0662\u0663",)
    ]


@pytest.mark.parametrize(
    "timestamp",
    [
        # Arabic-Indic digits, written as escapes so that they are seen for what they are
        "2026-01-02T03:04:05.\u0661\u0662\u0663Z",
        "2026-01-02T03:04:0\u0665Z",
        "\u0662026-01-02T03:04:05Z",
    ],
)
async def test_only_ascii_digits_in_timestamps(service: Running, timestamp: str) -> None:
    body = json.dumps([make_result(timestamp=timestamp)], ensure_ascii=False).encode()
    resp = await service.results.post("/results", data=body, headers=JSON)
    assert resp.status == 400
    (error,) = (await resp.json())["errors"]
    assert (error["index"], error["field"]) == (0, "timestamp")
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


@pytest.mark.parametrize("ip", ["fe80::1%eth0", "2001:db8::1%1", "::ffff:192.0.2.1%x"])
async def test_zone_index_in_target_is_refused(service: Running, ip: str) -> None:
    resp = await service.results.post("/results", json=[make_result(ip=ip)])
    assert resp.status == 400
    (error,) = (await resp.json())["errors"]
    assert (error["index"], error["field"]) == (0, "ip")
    assert "zone index" in error["reason"]
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]
    recent = await service.health.get("/recent", params={"ip": ip})
    assert recent.status == 400


@pytest.mark.parametrize("ip", ["%FF", "10.0.0.1%eth0", "%"])
async def test_a_percent_sign_outside_ipv6_is_no_address(service: Running, ip: str) -> None:
    # a zone index only exists on IPv6; anything else with a "%" is simply not an address,
    # and the reason must say so rather than blame a zone
    resp = await service.results.post("/results", json=[make_result(ip=ip)])
    assert resp.status == 400
    (error,) = (await resp.json())["errors"]
    assert (error["index"], error["field"]) == (0, "ip")
    assert "not an IPv4 or IPv6 address" in error["reason"]
    assert "zone" not in error["reason"]
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


def test_zone_index_in_hop_is_not_sent_back() -> None:
    # hop addresses are stored as sent (a timed-out hop may have any text), but only
    # addresses Go's net.ParseIP takes are fed back, and it refuses zones
    assert hop_address("2001:db8::1%eth0") is None
    assert hop_address("2001:db8::1") == "2001:db8::1"
