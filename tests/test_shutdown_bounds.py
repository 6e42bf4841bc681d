"""Shutdown within its grace whatever clients do: a /dump read slowly, an idle
keep-alive connection and an upload that trickles in do not hold the process past
`shutdown_grace_s` (plus a margin: the test polls, it does not time). It exits 0
with every acknowledged batch on disk."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from output_service.config import Config
from tests.conftest import make_result
from tests.service_process import start_service, stored_ips, wait_until
from tests.test_dump import make_big_file

GRACE_S = 6.0
MARGIN_S = 4.5  # generous for a loaded machine, yet below the second grace aiohttp would wait


def slow_reader(sock: socket.socket, stop: threading.Event) -> None:
    """Reads 1 KB every 50 ms: a client that is slow, but never stalled."""
    sock.settimeout(1)
    while not stop.is_set():
        try:
            if not sock.recv(1024):
                return
        except TimeoutError:
            continue
        except OSError:
            return
        time.sleep(0.05)


def post(port: int, ip: str) -> bytes:
    body = json.dumps([make_result(ip=ip)]).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_sigterm_with_slow_clients_exits_within_the_grace(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    make_big_file(Config(db_dir=db_dir), 40)  # a 40 MB live file: a long download
    # rotation_days: the file (named for 2026-01-01) stays live, so /dump snapshots it
    service = start_service(
        db_dir, f"--shutdown-grace-s={GRACE_S}", "--dump-send-timeout-s=600", "--rotation-days=1e6"
    )
    stop = threading.Event()
    clients: list[socket.socket] = []
    try:
        for i in range(3):
            assert post(service.results_port, f"192.0.2.{i + 1}").startswith(b"HTTP/1.1 200")
        download = socket.create_connection(("127.0.0.1", service.results_port), timeout=10)
        download.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        download.sendall(b"GET /dump HTTP/1.1\r\nHost: x\r\n\r\n")
        assert download.recv(12) == b"HTTP/1.1 200"  # the snapshot is made, streaming begins
        reader = threading.Thread(target=slow_reader, args=(download, stop), daemon=True)
        reader.start()
        idle = socket.create_connection(("127.0.0.1", service.results_port), timeout=10)
        upload = socket.create_connection(("127.0.0.1", service.results_port), timeout=10)
        upload.sendall(
            b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n[{"  # and the rest never comes
        )
        clients += [download, idle, upload]
        signalled = time.monotonic()
        service.proc.send_signal(15)
        wait_until(
            lambda: service.proc.poll() is not None,
            GRACE_S + MARGIN_S,
            "the service to exit after SIGTERM",
        )
        took = time.monotonic() - signalled
    finally:
        stop.set()
        for sock in clients:
            sock.close()
        if service.proc.poll() is None:
            service.kill9()
    assert service.proc.returncode == 0, service.stderr()
    print(f"exited {took:.2f} s after SIGTERM (grace {GRACE_S} s)")
    ips = stored_ips(db_dir)
    assert all(ips[f"192.0.2.{i + 1}"] == 1 for i in range(3))
    assert service.events("stopped")
