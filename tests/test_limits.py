"""Limits: body size as sent and after inflating, results per batch, hops, string
lengths, nesting, and slow clients. Each over-limit request gets a JSON 4xx,
is counted by limit, and stores nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import tracemalloc
import zlib
from typing import Any

import pytest

from output_service.models import MAX_DEPTH
from output_service.services import Services
from tests.conftest import Running, StartService, make_result
from tests.service_process import start_service as start_process

MB = 1024 * 1024


def rejected(services: Services, reason: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "output_service_rejected_requests_total", {"reason": reason}
    )
    return value or 0.0


async def assert_refused(
    running: Running, resp: Any, status: int, reason: str | None = None
) -> dict[str, Any]:
    assert resp.status == status
    body: dict[str, Any] = await resp.json()
    assert body["status"] == "error"
    if reason is not None:
        assert body.get("limit", reason) == reason
        assert rejected(running.services, reason) == 1
    assert running.rows("SELECT count(*) FROM ping_results") == [(0,)]
    return body


def gzip_bomb(inflated_mb: int) -> bytes:
    """A valid JSON array start followed by `inflated_mb` MB of spaces, gzipped."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [squeeze.compress(b"[")]
    block = b" " * MB
    parts.extend(squeeze.compress(block) for _ in range(inflated_mb))
    parts.append(squeeze.compress(b"]"))
    parts.append(squeeze.flush())
    return b"".join(parts)


async def test_body_over_limit_is_413(start_service: StartService) -> None:
    running = await start_service(max_body_mb=0.01)
    body = json.dumps([make_result(error="x" * 4000) for _ in range(5)]).encode()
    assert len(body) > 0.01 * MB
    resp = await running.results.post(
        "/results", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_refused(running, resp, 413, "body_too_large")


async def test_chunked_body_over_limit_is_413(start_service: StartService) -> None:
    running = await start_service(max_body_mb=0.01)

    async def chunks() -> Any:
        for _ in range(50):
            yield b" " * 1024

    resp = await running.results.post(
        "/results", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await assert_refused(running, resp, 413, "body_too_large")


async def test_gzip_bomb_is_stopped_at_the_limit(start_service: StartService) -> None:
    running = await start_service(max_body_mb=1)
    bomb = gzip_bomb(inflated_mb=200)
    assert len(bomb) < MB  # small as sent, 200 MB inflated
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        resp = await running.results.post(
            "/results",
            data=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        body = await assert_refused(running, resp, 413, "inflated_too_large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "max_body_mb" in body["error"]
    # client and service share this process: the bomb as sent, the 1 MB limit, one
    # piece of output (about 2 MB in all); 200 MB had it been inflated whole
    assert peak < 4 * MB, peak
    # the service is still there and takes a normal compressed batch
    ok = await running.results.post(
        "/results",
        data=gzip.compress(json.dumps([make_result("192.0.2.7")]).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert ok.status == 200
    assert running.rows("SELECT ip FROM ping_results") == [("192.0.2.7",)]


async def test_compressed_body_over_limit_is_413_before_inflating(
    start_service: StartService,
) -> None:
    running = await start_service(max_body_mb=0.01)
    incompressible = gzip.compress(os.urandom(20_000))
    resp = await running.results.post(
        "/results",
        data=incompressible,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    await assert_refused(running, resp, 413, "body_too_large")


async def test_broken_gzip_is_400(start_service: StartService) -> None:
    # read_timeout_s is high: a reader left waiting would hang instead of passing with 408
    running = await start_service(read_timeout_s=3600)
    resp = await running.results.post(
        "/results",
        data=b"\x1f\x8b\x08\x00not gzip at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    body = await assert_refused(running, resp, 400)
    assert body == {
        "status": "error",
        "error": "compressed body is not valid gzip",
        "encoding": "gzip",
    }
    assert rejected(running.services, "bad_encoding") == 1


async def test_too_many_results_is_413(start_service: StartService) -> None:
    running = await start_service(max_batch_results=3)
    resp = await running.results.post("/results", json=[make_result()] * 4)
    body = await assert_refused(running, resp, 413, "too_many_results")
    assert "at most 3" in body["error"]


async def test_too_many_hops_is_400_naming_the_field(start_service: StartService) -> None:
    running = await start_service()
    resp = await running.results.post("/results", json=[make_result(hops=256)])
    body = await assert_refused(running, resp, 400)
    assert body["errors"][0]["field"] == "traceroute.hops"
    assert rejected(running.services, "too_many_hops") == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("ip", "1" * 65), ("error", "e" * 4097), ("timestamp", "2" * 65)],
)
async def test_overlong_strings_are_400(
    start_service: StartService, field: str, value: str
) -> None:
    running = await start_service()
    resp = await running.results.post("/results", json=[make_result(**{field: value})])
    body = await assert_refused(running, resp, 400)
    assert body["errors"][0]["field"] == field
    assert rejected(running.services, "string_too_long") == 1


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
async def test_deep_nesting_is_400(start_service: StartService, depth: int) -> None:
    running = await start_service()
    nested = "[" * depth + "]" * depth
    body = f'[{{"ip": "192.0.2.1", "extra": {nested}}}]'.encode()
    resp = await running.results.post(
        "/results", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_refused(running, resp, 400, "too_deep")


async def test_nesting_within_the_limit_is_kept(start_service: StartService) -> None:
    running = await start_service()
    extra: Any = "leaf"
    for _ in range(MAX_DEPTH - 3):
        extra = [extra]
    resp = await running.results.post("/results", json=[make_result(extra=extra)])
    assert resp.status == 200
    (raw,) = running.rows("SELECT raw FROM ping_results")[0]
    assert json.loads(raw)["extra"] == extra


async def test_slow_body_is_cut_off_with_408(start_service: StartService) -> None:
    running = await start_service(read_timeout_s=0.2)
    server = running.results.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n[{"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), timeout=30))
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    assert body["limit"] == "read_timeout"
    assert rejected(running.services, "read_timeout") == 1
    assert running.rows("SELECT count(*) FROM ping_results") == [(0,)]


def test_slow_headers_are_cut_off(tmp_path: Any) -> None:
    service = start_process(tmp_path / "data", "--keepalive-timeout-s=0.3")
    try:
        with socket.create_connection(("127.0.0.1", service.results_port), timeout=30) as sock:
            sock.sendall(b"POST /results HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert sock.recv(1024) == b""  # closed by the server, not by our timeout
    finally:
        assert service.terminate() == 0


# br and zstd are known to aiohttp's parser: with its inflating off they reach the handler
@pytest.mark.parametrize("encoding", ["x-unknown", "gzip, gzip", "compress", "br", "zstd"])
async def test_unsupported_content_encoding_is_415(
    start_service: StartService, encoding: str
) -> None:
    running = await start_service()
    resp = await running.results.post(
        "/results",
        data=json.dumps([make_result()]).encode(),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    body = await assert_refused(running, resp, 415)
    assert body == {
        "status": "error",
        "error": "Content-Encoding must be gzip, deflate or identity",
    }
    assert rejected(running.services, "unsupported_encoding") == 1
