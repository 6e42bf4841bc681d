"""state.db version 1 (Unix float times) becomes version 2 (RFC 3339 UTC text) in
place at start-up: every row kept, times in the results files' format and in
time order, the outbox's id high-water mark kept; a migration that does not
finish (rolled back, or its process killed -9) leaves version 1 intact and the
next start completes it. Everything is read back with a separate connection."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from output_service.hops.state import SCHEMA_VERSION, StateDB
from tests.service_process import start_service, wait_until

# The version 1 schema as the service created it before times became text.
V1_SCHEMA = """
CREATE TABLE seen (ip TEXT PRIMARY KEY, queued_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ip TEXT NOT NULL UNIQUE,
    queued_at REAL NOT NULL);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, queued_at REAL NOT NULL,
    failed_at REAL NOT NULL, status INTEGER NOT NULL, response TEXT);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('discovered', 0), ('sent', 0), ('dropped', 0),
    ('dead_lettered', 0);
PRAGMA user_version = 1;
"""
# 2026-11-23T08:00:00Z, and moments chosen so that their float order and the
# order of their digits differ (9.5 s before 10.25 s; a year boundary)
BASE = 1795420800.0
MOMENTS = [BASE + 10.25, BASE + 9.5, 1767225599.999999, BASE + 86400 * 40 + 0.000001]


def expected_text(seconds: float) -> str:
    """RFC 3339 UTC with microseconds, computed here without the service's helper."""
    import datetime as dt

    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_v1(path: Path, seen: int = 0) -> None:
    """A version 1 state.db: four outbox rows (ids 5..8 after three were sent and
    removed, so the AUTOINCREMENT mark is above the largest id), a dead letter,
    and `seen` extra seen-set rows to make the migration take a while."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_SCHEMA)
    conn.execute("BEGIN")
    ips = [f"198.51.100.{i + 1}" for i in range(len(MOMENTS))]
    conn.executemany("INSERT INTO seen VALUES (?, ?)", zip(ips, MOMENTS, strict=True))
    conn.executemany(
        "INSERT INTO outbox (id, ip, queued_at) VALUES (?, ?, ?)",
        [(5 + i, ip, at) for i, (ip, at) in enumerate(zip(ips, MOMENTS, strict=True))],
    )
    conn.execute("UPDATE sqlite_sequence SET seq = 11 WHERE name = 'outbox'")
    conn.execute(
        "INSERT INTO dead_letters VALUES (1, '203.0.113.9', ?, ?, 400, 'bad hop')",
        (BASE, BASE + 0.5),
    )
    conn.executemany(
        "INSERT INTO seen VALUES (?, ?)",
        ((f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", BASE - i) for i in range(seen)),
    )
    conn.execute("COMMIT")
    conn.close()


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def assert_migrated(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION
        outbox = conn.execute("SELECT id, queued_at, typeof(queued_at) FROM outbox ORDER BY id")
        rows = outbox.fetchall()
        assert [r[0] for r in rows] == [5, 6, 7, 8]
        assert [r[1] for r in rows] == [expected_text(m) for m in MOMENTS]
        assert {r[2] for r in rows} == {"text"}
        by_time = [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY queued_at")]
        by_float = [5 + i for i, _ in sorted(enumerate(MOMENTS), key=lambda p: p[1])]
        assert by_time == by_float
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone() == (
            11,
        )
        assert conn.execute(
            "SELECT count(*) FROM seen WHERE typeof(queued_at) != 'text'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT queued_at, failed_at, response FROM dead_letters"
        ).fetchall() == [(expected_text(BASE), expected_text(BASE + 0.5), "bad hop")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # (the idempotency key index shares the file; its times were text already)
        assert tables - {"idempotency_keys"} == {
            "seen",
            "outbox",
            "dead_letters",
            "counters",
            "sqlite_sequence",
        }
    finally:
        conn.close()


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    make_v1(path)
    StateDB.open(path, synchronous="NORMAL").close()
    assert_migrated(path)
    # a new hop gets an id above the old high-water mark, its time as text
    state = StateDB.open(path, synchronous="NORMAL")
    try:
        state.queue(["192.0.2.77"], BASE + 100, cap=100, depth=4)
        assert [w.ip for w in state.oldest(10)][-1] == "192.0.2.77"
        assert [round(w.queued_at, 6) for w in state.oldest(4)] == [round(m, 6) for m in MOMENTS]
    finally:
        state.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT id, queued_at FROM outbox WHERE ip = '192.0.2.77'"
        ).fetchone() == (
            12,
            expected_text(BASE + 100),
        )


def test_a_rolled_back_migration_leaves_version_1_and_the_next_open_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    make_v1(path)
    calls = 0

    def failing(value: str | int | float | None) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 3:  # part-way through the copy
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return str(value)

    from output_service.hops import state as state_module

    monkeypatch.setattr(state_module, "_rfc3339", failing)
    with pytest.raises(sqlite3.OperationalError):
        StateDB.open(path, synchronous="NORMAL")
    assert version(path) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT typeof(queued_at) FROM outbox").fetchall() == [("real",)] * 4
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"outbox"}
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_v2'").fetchall()
    monkeypatch.undo()
    StateDB.open(path, synchronous="NORMAL").close()
    assert_migrated(path)


MIGRATE = (
    "import sys; from pathlib import Path; from output_service.hops.state import StateDB;"
    " StateDB.open(Path(sys.argv[1]), synchronous='FULL')"
)


def test_a_migration_killed_mid_way_is_finished_by_the_next_start(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    path = db_dir / "state.db"
    make_v1(path, seen=400_000)  # enough rows that the copy takes a noticeable while
    wal = db_dir / "state.db-wal"
    child = subprocess.Popen([sys.executable, "-c", MIGRATE, str(path)])
    try:
        # the migration's pages reach the WAL as the copy runs: kill it then
        def copying() -> bool:
            return wal.exists() and wal.stat().st_size >= 512 * 1024

        wait_until(lambda: copying() or child.poll() is not None, 60, "the migration to start")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, "the migration finished before it was killed"
    assert version(path) == 1  # the killed transaction left the old file
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM seen").fetchone() == (400_000 + len(MOMENTS),)
    service = start_service(db_dir, "--input-url=http://127.0.0.1:9/hops")
    try:
        assert_migrated(path)
        with urllib.request.urlopen(service.health_url("/api/hops?limit=2"), timeout=30) as reply:
            body = json.loads(reply.read())
        assert body["outbox_depth"] == len(MOMENTS)
        assert body["dead_letters"][0]["queued_at"] == expected_text(BASE)
        assert body["hops"][0]["last_queued"].endswith("Z")
    finally:
        assert service.terminate() == 0
