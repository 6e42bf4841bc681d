"""Content-Encoding on POST /results: gzip, x-gzip, deflate (zlib-wrapped or raw, as
Go's compress/zlib and compress/flate send it) and identity are inflated by the
service itself; a body that does not inflate gets a JSON 400 naming its encoding
at once, whether it is corrupt, cut short or followed by other bytes."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Running, StartService, make_result
from tests.test_limits import assert_refused, rejected

JSON = {"Content-Type": "application/json"}


def squeeze(body: bytes, wbits: int) -> bytes:
    """`body` compressed: wbits 31 gzip, 15 zlib-wrapped deflate, -15 raw deflate."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(body) + compressor.flush()


def batch(*ips: str) -> bytes:
    return json.dumps([make_result(ip) for ip in ips]).encode()


async def post(running: Running, data: Any, encoding: str) -> Any:
    return await running.results.post(
        "/results", data=data, headers={**JSON, "Content-Encoding": encoding}
    )


async def in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    """A chunked request body: the service sees the stream in pieces of `size` bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def assert_bad_encoding(running: Running, resp: Any, error: str, encoding: str) -> None:
    body = await assert_refused(running, resp, 400)
    assert body == {"status": "error", "error": error, "encoding": encoding}
    assert rejected(running.services, "bad_encoding") == 1


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15), ("identity", 0)],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "identity"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_encoded_bodies_are_stored(
    start_service: StartService, encoding: str, wbits: int, chunked: bool
) -> None:
    running = await start_service()
    body = batch("192.0.2.1", "192.0.2.2")
    data = squeeze(body, wbits) if wbits else body
    resp = await post(running, in_chunks(data, 7) if chunked else data, encoding)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "ok", "received": 2}
    assert running.rows("SELECT ip FROM ping_results ORDER BY id") == [
        ("192.0.2.1",),
        ("192.0.2.2",),
    ]


async def test_concatenated_gzip_members_are_one_body(start_service: StartService) -> None:
    # RFC 1952: a gzip body is a series of members (Go's gzip.Reader reads them all)
    running = await start_service()
    text = batch("192.0.2.3").decode()
    data = gzip.compress(text[:10].encode()) + gzip.compress(text[10:].encode())
    resp = await post(running, data, "gzip")
    assert resp.status == 200, await resp.text()
    assert running.rows("SELECT ip FROM ping_results") == [("192.0.2.3",)]


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_truncated_body_is_400_at_once(
    start_service: StartService, encoding: str, wbits: int, chunked: bool
) -> None:
    # read_timeout_s is high: a reader left waiting for the rest of the stream would
    # hang this test until pytest's timeout instead of passing with a 408
    running = await start_service(read_timeout_s=3600)
    data = squeeze(batch("192.0.2.1", "192.0.2.2"), wbits)[:-12]
    resp = await post(running, in_chunks(data, 5) if chunked else data, encoding)
    await assert_bad_encoding(
        running,
        resp,
        f"compressed body is truncated (the {encoding} stream does not end)",
        encoding,
    )


async def test_empty_gzip_body_is_400(start_service: StartService) -> None:
    running = await start_service(read_timeout_s=3600)
    resp = await post(running, b"", "gzip")
    await assert_bad_encoding(
        running, resp, "compressed body is truncated (the gzip stream does not end)", "gzip"
    )


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", batch("192.0.2.1")),  # plain JSON labelled gzip
        ("deflate", b"\x78\x9c" + b"\xff" * 40),  # a zlib header, then garbage
        ("deflate", b"\xff" * 40),  # neither zlib nor raw deflate
    ],
    ids=["gzip-plain-json", "zlib-garbage", "deflate-garbage"],
)
async def test_body_that_does_not_inflate_is_400(
    start_service: StartService, encoding: str, data: bytes
) -> None:
    running = await start_service(read_timeout_s=3600)
    resp = await post(running, data, encoding)
    await assert_bad_encoding(running, resp, f"compressed body is not valid {encoding}", encoding)


async def test_gzip_with_a_wrong_checksum_is_400(start_service: StartService) -> None:
    running = await start_service()
    data = bytearray(gzip.compress(batch("192.0.2.1")))
    data[-8] ^= 0xFF  # the CRC-32 in the trailer
    resp = await post(running, bytes(data), "gzip")
    await assert_bad_encoding(running, resp, "compressed body is not valid gzip", "gzip")


@pytest.mark.parametrize(
    ("encoding", "wbits", "trailer"),
    [
        ("gzip", 31, b"\x00\x00\x00\x00"),
        ("gzip", 31, b"[]"),
        ("deflate", 15, b"x"),
        ("deflate", -15, b"x"),
    ],
)
async def test_bytes_after_the_stream_are_400(
    start_service: StartService, encoding: str, wbits: int, trailer: bytes
) -> None:
    running = await start_service()
    resp = await post(running, squeeze(batch("192.0.2.1"), wbits) + trailer, encoding)
    await assert_bad_encoding(
        running,
        resp,
        f"compressed body has bytes after the end of the {encoding} stream",
        encoding,
    )
