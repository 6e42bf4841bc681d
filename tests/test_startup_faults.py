"""A fault at start-up is not corruption: a full disk stops the start (exit 2,
one line), moves nothing, and once space is back every acknowledged batch is
there. Only a file that is not SQLite is still quarantined.

Each variant runs the service as a real process and kills it with SIGKILL, so
the live file is left with its WAL unfolded, as a crash leaves it; the restart
then has to write (fold the WAL in) and cannot.
"""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_result
from tests.service_process import start_service
from tests.small_fs import mounted_tmpfs

DEADLINE_S = 30
BATCHES = 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path, "32m") as mount_point:
        yield mount_point


def listing(db_dir: Path) -> dict[str, str]:
    """Every path under db_dir with a hash of its bytes (directories: "dir")."""
    return {
        str(p.relative_to(db_dir)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db_dir.rglob("*"))
    }


def fill_and_crash(db_dir: Path) -> int:
    """Start, store BATCHES acknowledged batches (one 100-result batch each), SIGKILL."""
    service = start_service(db_dir, "--wal-autocheckpoint=0")
    try:
        for n in range(BATCHES):
            body = json.dumps([make_result(f"10.{n}.0.{i}", hops=3) for i in range(100)]).encode()
            request = urllib.request.Request(
                service.url("/results"), data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
                assert response.status == 200
    finally:
        service.kill9()
    return BATCHES * 100


def run_cli(db_dir: Path, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit_file_size() -> None:
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "output_service",
            "--host=127.0.0.1",
            "--port=0",
            "--health-port=0",
            "--input-url=",
            f"--db-dir={db_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        preexec_fn=limit_file_size,
    )


def stored(db_dir: Path) -> int:
    total = 0
    for path in sorted(db_dir.glob("results_*.db")):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            total += int(conn.execute("SELECT count(*) FROM ping_results").fetchone()[0])
        finally:
            conn.close()
    return total


def assert_full_disk_refusal(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "is full" in lines[0]
    assert "nothing was moved" in lines[0]


def restart_and_count(db_dir: Path) -> int:
    service = start_service(db_dir)
    assert service.terminate() == 0, service.stderr()
    return stored(db_dir)


def test_full_disk_at_restart_exits_2_moves_nothing_and_loses_nothing(small_fs: Path) -> None:
    db_dir = small_fs / "data"
    acked = fill_and_crash(db_dir)
    filler = small_fs / "filler"
    with filler.open("wb") as fh:  # every last byte of the filesystem
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    before = listing(db_dir)
    proc = run_cli(db_dir)
    assert_full_disk_refusal(proc)
    after = listing(db_dir)
    assert not (db_dir / "quarantine").exists()
    assert {k for k in after if k.startswith("results_")} == {
        k for k in before if k.startswith("results_")
    }
    filler.unlink()  # the operator frees space
    assert restart_and_count(db_dir) == acked


def test_file_size_limit_at_restart_exits_2_and_loses_nothing(tmp_path: Path) -> None:
    """Without mount rights: RLIMIT_FSIZE keeps the live file from taking its WAL back."""
    db_dir = tmp_path / "data"
    acked = fill_and_crash(db_dir)
    (live,) = db_dir.glob("results_*.db")
    wal = live.with_name(live.name + "-wal")
    assert wal.stat().st_size > live.stat().st_size  # the crash left the rows in the WAL
    proc = run_cli(db_dir, limit=live.stat().st_size + 4096)
    assert_full_disk_refusal(proc)
    assert not (db_dir / "quarantine").exists()
    assert [p.name for p in db_dir.glob("results_*.db")] == [live.name]
    assert restart_and_count(db_dir) == acked


def test_a_file_that_is_not_sqlite_is_still_quarantined(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    junk = db_dir / "results_2026-01-01_00-00-00.db"
    junk.write_bytes(b"not an SQLite file at all" * 200)
    service = start_service(db_dir)
    assert service.terminate() == 0, service.stderr()
    assert not junk.exists()
    assert (db_dir / "quarantine" / junk.name).read_bytes() == b"not an SQLite file at all" * 200
