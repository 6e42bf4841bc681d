"""Arbitrary bytes and JSON at POST /results: always a 4xx (or a 200 for the rare
valid batch), never a 5xx; the service stays up and stores exactly what it
acknowledged, nothing of any refused batch."""

from __future__ import annotations

import http.client
import json
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import make_result
from tests.service_process import ServiceProcess, start_service
from tests.test_bad_text import first_bad_byte

FIELDS = ["ip", "sent", "received", "packet_loss", "avg_rtt", "timestamp", "error", "traceroute"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def mutated_results(draw: st.DrawFn) -> Any:
    """A real result with fields replaced, renamed in odd case, or removed: gets past
    the JSON parser into validation, where the interesting code is."""
    result: dict[str, Any] = make_result(hops=draw(st.integers(0, 3)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        action = draw(st.sampled_from(["replace", "drop", "case"]))
        value = result.pop(name, None)
        if action == "replace":
            result[name] = draw(json_values)
        elif action == "case":
            result[name.upper()] = value
    if "traceroute" in result and isinstance(result["traceroute"], dict) and draw(st.booleans()):
        result["traceroute"]["hops"] = draw(st.lists(json_values, max_size=4))
    return draw(st.sampled_from([result, [result], [result, result]]))


MARK = "@@not-utf8@@"
# sequences that are never UTF-8, and random bytes (kept only if they are not)
BROKEN = [
    b"\xff",
    b"\xe9",
    b"\x80",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",
    b"\xf0\x9f",
]
broken_bytes = st.sampled_from(BROKEN) | st.binary(min_size=1, max_size=6)
# where in a result the broken string goes: a value, a key, an unknown field, a hop
PLACES = ["error", "ip", "timestamp", "key", "unknown", "hop_ip", "method"]


@st.composite
def utf8_broken_bodies(draw: st.DrawFn) -> bytes:
    """A real result, one of its strings carrying bytes that are not UTF-8, amid
    valid (possibly non-ASCII) text."""
    result: dict[str, Any] = make_result(hops=draw(st.integers(1, 3)))
    text = draw(st.text(max_size=8)) + MARK + draw(st.text(max_size=8))
    place = draw(st.sampled_from(PLACES))
    if place == "key":
        result[text] = 1
    elif place == "unknown":
        result["note"] = {"deep": [text]}
    elif place == "hop_ip":
        result["traceroute"]["hops"][0]["ip"] = text
    elif place == "method":
        result["traceroute"]["method"] = text
    else:
        result[place] = text
    body = json.dumps(draw(st.sampled_from([result, [result]])), ensure_ascii=False).encode()
    return body.replace(MARK.encode(), draw(broken_bytes))


bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_results().map(lambda v: json.dumps(v).encode()),
    st.text(max_size=200).map(str.encode),
)
encodings = st.sampled_from(
    [None, None, "gzip", "x-gzip", "deflate", "identity", "br", "x-unknown", "gzip, gzip"]
)
# how the body is sent under its Content-Encoding: compressed as it says (deflate
# zlib-wrapped or raw), not compressed at all, or compressed and cut short
packings = st.sampled_from(["compressed", "raw-deflate", "plain", "truncated"])


def encode(body: bytes, encoding: str | None, packing: str) -> bytes:
    if packing == "plain" or encoding not in ("gzip", "x-gzip", "deflate"):
        return body
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}[encoding]
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15 if packing == "raw-deflate" else wbits)
    packed = squeeze.compress(body) + squeeze.flush()
    return packed[: len(packed) // 2] if packing == "truncated" else packed


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # the default read timeout (30 s): a body that left the reader waiting would
    # run into pytest's timeout rather than pass with a 408
    running = start_service(tmp_path_factory.mktemp("fuzz") / "data", "--max-batch-results=20")
    yield running
    assert running.terminate() == 0, running.stderr()


class Tally:
    acknowledged = 0


@given(
    body=bodies,
    encoding=encodings,
    packing=packings,
    ctype=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", None]
    ),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_body_gets_a_4xx_never_a_5xx(
    service: ServiceProcess, body: bytes, encoding: str | None, packing: str, ctype: str | None
) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    if ctype:
        headers["Content-Type"] = ctype
    conn = http.client.HTTPConnection("127.0.0.1", service.results_port, timeout=30)
    try:
        conn.request("POST", "/results", body=encode(body, encoding, packing), headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    # every answer comes from the app, JSON, never aiohttp's plain-text 400
    assert response.getheader("X-Request-ID") is not None, (response.status, raw)
    assert response.getheader("Content-Type", "").startswith("application/json"), raw
    reply = json.loads(raw)
    assert response.status < 500, reply
    assert response.status != 408, reply  # the whole body was sent at once
    if response.status == 200:
        Tally.acknowledged += reply["received"]
    else:
        assert 400 <= response.status < 500
        assert reply["status"] == "error" and reply["error"]


@given(body=utf8_broken_bodies(), encoding=st.sampled_from([None, "gzip", "deflate"]))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_invalid_utf8_in_a_string_is_a_400_naming_its_offset(
    service: ServiceProcess, body: bytes, encoding: str | None
) -> None:
    offset = first_bad_byte(body)
    assume(offset >= 0)  # random bytes that happen to be UTF-8 are not the point here
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    conn = http.client.HTTPConnection("127.0.0.1", service.results_port, timeout=30)
    try:
        conn.request("POST", "/results", body=encode(body, encoding, "compressed"), headers=headers)
        response = conn.getresponse()
        reply = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 400, reply
    assert reply["offset"] == offset, (reply, body)


def test_still_up_and_stored_only_what_it_acknowledged(service: ServiceProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", service.health_port, timeout=30)
    try:
        conn.request("GET", "/ready")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert service.proc.poll() is None
    (db_file,) = service_db_files(service)
    db = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM ping_results").fetchone()[0] == Tally.acknowledged
    finally:
        db.close()


def service_db_files(service: ServiceProcess) -> list[Path]:
    return sorted(Path(service.events("listening")[0]["db_dir"]).glob("results_*.db"))
