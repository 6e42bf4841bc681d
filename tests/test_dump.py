"""GET /dump: consistent snapshots during ingest, retained files, bad names,
and no temp file left behind, even when the client goes away halfway."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import sqlite3
import threading
from pathlib import Path

from output_service.config import Config
from output_service.storage.sqlite.results_file import ResultsFile
from tests.conftest import Running, StartService, query, wait_for
from tests.rotation_support import (
    FakeClock,
    batch,
    ips_in,
    metric,
    names,
    post,
    rotate,
)

BIG_FILE = "results_2026-01-01_00-00-00.db"


def make_big_file(config: Config, megabytes: int) -> Path:
    """A results file of about `megabytes` MB, written before the service starts."""
    config.db_dir.mkdir(parents=True)
    path = config.db_dir / BIG_FILE
    file = ResultsFile.open(path, synchronous="OFF", cache_size_mb=8, wal_autocheckpoint=1000)
    file.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp, raw)"
        " SELECT '192.0.2.9', 1, 1, 0, 1, '2026-01-01T00:00:00.000000000Z',"
        " hex(randomblob(5000)) FROM n",
        (megabytes * 100,),
    )
    conn.commit()
    conn.close()
    return path


def temp_files(running: Running) -> list[Path]:
    return list((running.services.config.db_dir / "tmp").iterdir())


async def test_dump_is_a_sqlite_file_with_the_results(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service(clock=FakeClock())
    await post(running, batch(1, 3, hops=2))
    resp = await running.results.get("/dump")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.sqlite3"
    stamp = "2026-01-01T00-00-00.000000Z"  # the dump's own time (FakeClock)
    dumped = BIG_FILE.removesuffix(".db") + f"_dump-{stamp}.db"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{dumped}"'
    copy = tmp_path / "copy.db"
    copy.write_bytes(await resp.read())
    assert query(copy, "PRAGMA integrity_check") == [("ok",)]
    assert query(copy, "PRAGMA journal_mode") == [("delete",)]
    assert ips_in(copy) == ["10.0.1.0", "10.0.1.1", "10.0.1.2"]
    assert query(copy, "SELECT count(*) FROM traceroute_hops") == [(6,)]
    # the client has every byte a moment before the handler finishes
    await wait_for(lambda: metric(running, "output_service_dumps_total", outcome="complete") == 1)
    assert temp_files(running) == []
    assert metric(running, "output_service_dump_bytes_total") == copy.stat().st_size


async def test_dump_during_ingest_holds_everything_acknowledged_before(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service()
    acked: list[str] = []
    stop = asyncio.Event()

    async def sender(worker: int) -> None:
        n = 0
        while not stop.is_set():
            results = batch(worker * 1000 + n, 10, hops=4)
            await post(running, results)
            acked.extend(r["ip"] for r in results)
            n += 1

    senders = [asyncio.create_task(sender(w)) for w in range(4)]
    await wait_for(lambda: len(acked) >= 400)
    before = list(acked)
    resp = await running.results.get("/dump")
    body = await resp.read()
    during = len(acked)
    stop.set()
    await asyncio.gather(*senders)

    assert resp.status == 200
    assert during > len(before)  # ingest went on while the dump was made and sent
    copy = tmp_path / "during.db"
    copy.write_bytes(body)
    assert query(copy, "PRAGMA integrity_check") == [("ok",)]
    in_dump = ips_in(copy)
    assert set(before) <= set(in_dump)
    assert len(in_dump) == len(set(in_dump))
    # a snapshot sees whole transactions: every batch in it is complete
    tags: dict[str, int] = {}
    for ip in in_dump:
        tags[ip.rsplit(".", 1)[0]] = tags.get(ip.rsplit(".", 1)[0], 0) + 1
    assert set(tags.values()) == {10}
    await wait_for(lambda: temp_files(running) == [])


async def test_dump_of_a_retained_file_is_the_file(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service(clock=FakeClock())
    first = running.db_file
    await post(running, batch(1, 5))
    await rotate(running)
    resp = await running.results.get("/dump", params={"file": first.name})
    assert resp.status == 200
    dumped = first.name.removesuffix(".db") + "_dump-2026-01-01T00-00-00.000000Z.db"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{dumped}"'
    assert await resp.read() == first.read_bytes()


async def test_dump_refuses_paths_and_unknown_names(start_service: StartService) -> None:
    running = await start_service(clock=FakeClock())
    for bad in ("../results_2026-01-01_00-00-00.db", "/etc/passwd", f"{BIG_FILE}-wal", ""):
        resp = await running.results.get("/dump", params={"file": bad})
        assert resp.status == 400, bad
        body = await resp.json()
        assert body["status"] == "error"
        assert "not a results file name" in body["error"]
    resp = await running.results.get("/dump", params={"file": "results_2020-01-01_00-00-00.db"})
    assert resp.status == 404
    assert (await resp.json())["error"] == "no retained file named results_2020-01-01_00-00-00.db"


async def test_head_is_not_allowed(start_service: StartService) -> None:
    running = await start_service()
    resp = await running.results.head("/dump")
    assert resp.status == 405
    assert temp_files(running) == []
    await post(running, batch(1, 1))  # the connection and the service are fine


async def start_download(
    running: Running, target: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Begin GET `target` with a small receive buffer, read the headers and a
    little of the body, and leave the rest unread (the server is then stuck)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    server = running.results.server
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await reader.readexactly(64 * 1024)
    return reader, writer


async def test_disconnected_download_leaves_no_temp_file(
    start_service: StartService, config: Config
) -> None:
    make_big_file(config, 40)
    running = await start_service(clock=FakeClock())
    assert running.db_file.name == BIG_FILE
    _, writer = await start_download(running, "/dump")
    assert len(temp_files(running)) == 1  # the snapshot, still being sent
    writer.transport.abort()  # the client goes away halfway

    await wait_for(lambda: temp_files(running) == [])
    await wait_for(lambda: metric(running, "output_service_dumps_total", outcome="aborted") == 1)
    await post(running, batch(1, 1))  # and the service carries on


async def test_retention_may_delete_a_file_being_downloaded_which_still_arrives_whole(
    start_service: StartService, config: Config
) -> None:
    big = make_big_file(config, 40)
    expected = hashlib.sha256(big.read_bytes()[64 * 1024 :]).hexdigest()
    size = big.stat().st_size
    clock = FakeClock()
    running = await start_service(clock=clock, keep_files=2)
    clock.advance(1)
    second = await rotate(running)
    reader, writer = await start_download(running, f"/dump?file={BIG_FILE}")
    assert len(temp_files(running)) == 1  # a hard link: the download holds no file of /files
    clock.advance(1)
    third = await rotate(running)  # BIG_FILE is now beyond keep_files: deleted at once
    await wait_for(lambda: not big.exists())
    assert names(config.db_dir) == [second, third]
    rest = await reader.readexactly(size - 64 * 1024)
    assert hashlib.sha256(rest).hexdigest() == expected
    writer.close()
    await wait_for(lambda: temp_files(running) == [])


async def test_dumps_past_the_limit_get_503(start_service: StartService, config: Config) -> None:
    make_big_file(config, 40)
    running = await start_service(clock=FakeClock(), max_concurrent_dumps=2)
    held = [await start_download(running, "/dump") for _ in range(2)]
    resp = await running.results.get("/dump")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    reply = await resp.json()
    assert reply["limit"] == "too_many_dumps"
    assert len(temp_files(running)) == 2  # at most max_concurrent_dumps copies
    assert metric(running, "output_service_rejected_requests_total", reason="too_many_dumps") == 1
    # the snapshots ran on the dumps' own threads, not the pool seals use
    assert any(t.name.startswith("snapshot") for t in threading.enumerate())
    assert (await running.results.post("/rotate")).status == 200
    for _, writer in held:
        writer.transport.abort()
    await wait_for(lambda: temp_files(running) == [])
    resp = await running.results.get("/dump")
    assert resp.status == 200
    await resp.read()


async def test_a_stalled_download_is_dropped(start_service: StartService, config: Config) -> None:
    make_big_file(config, 40)
    running = await start_service(clock=FakeClock(), dump_send_timeout_s=0.2)
    reader, writer = await start_download(running, "/dump")  # and then never reads again
    await wait_for(lambda: temp_files(running) == [])
    assert metric(running, "output_service_dumps_total", outcome="stalled") == 1
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 20):  # what was in flight, then the end
            pass
    writer.close()
    await post(running, batch(1, 1))
