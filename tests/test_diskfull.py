"""Disk full and I/O errors on a real small filesystem (a 2 MB tmpfs mounted for the test).

A failed write is not acknowledged (507 for a full disk, 503 otherwise, both
with Retry-After), /ready turns 503, the error is counted, nothing committed
before is lost, and the service recovers by itself once the cause is gone. (A
read-only remount cannot be tested: the kernel refuses it while the writer holds
the file open, "mount point is busy".)
Mounting needs root (CAP_SYS_ADMIN); where that is not allowed the tmpfs tests
skip and the RLIMIT_FSIZE test covers the full-disk path in a real process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from output_service.services import Services
from tests.conftest import Running, StartService, make_result
from tests.service_process import start_service as start_process
from tests.small_fs import mounted_tmpfs

MAX_POSTS = 2000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem, unmounted afterwards."""
    with mounted_tmpfs(tmp_path, "2m") as mount_point:
        yield mount_point


def storage_errors(services: Services, kind: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "output_service_storage_errors_total", {"kind": kind}
    )
    return value or 0.0


async def post_until_refused(running: Running, start: int) -> tuple[int, Any]:
    """Post one-result batches (with 40 hops each) until one is refused."""
    for n in range(start, start + MAX_POSTS):
        resp = await running.results.post(
            "/results", json=[make_result(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", hops=40)]
        )
        if resp.status != 200:
            return n - start, resp
    raise AssertionError("the filesystem never filled up")


def stored_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT count(*) FROM ping_results").fetchone()[0])
    finally:
        conn.close()


async def test_disk_full_is_507_not_ready_and_recovers(
    start_service: StartService, small_fs: Path
) -> None:
    running = await start_service(db_dir=small_fs / "data", wal_autocheckpoint=100)
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 1_000_000)  # leave room for a few hundred results only
    acked, refused = await post_until_refused(running, 0)
    assert acked > 0
    assert refused.status == 507
    assert refused.headers["Retry-After"].isdigit()
    assert (await refused.json())["status"] == "error"
    ready = await running.health.get("/ready")
    assert ready.status == 503
    assert storage_errors(running.services, "disk_full") >= 1
    assert stored_count(running.db_file) == acked  # nothing committed was lost

    filler.unlink()  # the operator frees space
    resp = await running.results.post("/results", json=[make_result("192.0.2.200")])
    assert resp.status == 200
    assert (await running.health.get("/ready")).status == 200
    assert stored_count(running.db_file) == acked + 1


def _limit_file_size(limit: int) -> None:
    """In the child: files may not grow past `limit`; writes fail with EFBIG instead of
    the process being killed by SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def _post(url: str, n: int) -> int:
    body = (
        b'[{"ip": "10.1.%d.%d", "sent": 1, "received": 1, "packet_loss": 0, "avg_rtt": 1,'
        b' "timestamp": "2026-01-02T03:04:05Z", "error": "%s"}]'
        % (n >> 8 & 255, n & 255, b"e" * 3000)
    )
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code


def test_file_size_limit_refuses_and_recovers_in_a_real_process(tmp_path: Path) -> None:
    """Works without mount rights: RLIMIT_FSIZE makes the kernel refuse to grow files."""
    limit = 1_000_000
    service = start_process(
        tmp_path / "data", "--wal-autocheckpoint=50", preexec_fn=lambda: _limit_file_size(limit)
    )
    try:
        statuses = [_post(service.url("/results"), n) for n in range(MAX_POSTS // 4)]
        assert 200 in statuses
        first_refusal = next(i for i, s in enumerate(statuses) if s != 200)
        assert statuses[first_refusal] in (503, 507)
        assert all(s == 200 for s in statuses[:first_refusal])
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(service.health_url("/ready"), timeout=30)
        not_ready.value.close()
        assert not_ready.value.code == 503

        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (-1, -1))  # space again
        assert _post(service.url("/results"), 9999) == 200
        with urllib.request.urlopen(service.health_url("/ready"), timeout=30) as ready:
            assert ready.status == 200
    finally:
        assert service.terminate() == 0, service.stderr()
    acked = first_refusal + 1 + sum(1 for s in statuses[first_refusal:] if s == 200)
    (db_file,) = (tmp_path / "data").glob("results_*.db")
    assert stored_count(db_file) == acked
    assert os.path.getsize(db_file) > 0


async def test_results_file_deleted_underneath_is_restored(start_service: StartService) -> None:
    """SQLite would go on "committing" into the deleted inode; the writer notices and
    writes the file back from its open connection, so no acknowledged batch is lost."""
    running = await start_service()
    first = await running.results.post("/results", json=[make_result("192.0.2.1", hops=3)])
    assert first.status == 200
    path = running.db_file
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    second = await running.results.post("/results", json=[make_result("192.0.2.2")])
    assert second.status == 200
    assert path.exists()
    assert stored_count(path) == 2
    assert running.rows("SELECT count(*) FROM traceroute_hops") == [(3,)]
    assert storage_errors(running.services, "file_removed") == 1
    assert (await running.health.get("/ready")).status == 200
