"""`output-service merge OUT FILE...` as a real process, on files real services wrote."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from output_service.storage.sqlite.schema import SCHEMA_VERSION, SEED_INDEX_NAMES, SEED_TABLES
from tests.conftest import Running, StartService, make_result, query

CMD = [sys.executable, "-m", "output_service", "merge"]


def _merge(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _reports(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


async def _post(svc: Running, batch: list[dict[str, Any]], **headers: str) -> None:
    assert (await svc.results.post("/results", json=batch, headers=headers)).status == 200


def _go_era_file(path: Path) -> Path:
    """The Go service's shape: seed tables only, no batches, its own time format."""
    conn = sqlite3.connect(path)
    conn.executescript(SEED_TABLES)
    for i in range(3):
        conn.execute(
            "INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp)"
            " VALUES (?, 3, 3, 0.0, 5000, '2025-06-01 10:00:00.5+02:00')",
            (f"203.0.113.{i + 1}",),
        )
        conn.execute(
            "INSERT INTO traceroute_results (ping_result_id, method, completed)"
            " VALUES (?, 'udp', 1)",
            (i + 1,),
        )
        conn.execute(
            "INSERT INTO traceroute_hops (traceroute_id, ttl, ip, rtt)"
            " VALUES (?, 1, '198.51.100.7', 300)",
            (i + 1,),
        )
    conn.commit()
    conn.close()
    return path


async def test_two_instances_merge_with_duplicates_stored_once(
    start_service: StartService, tmp_path: Path
) -> None:
    a = await start_service(db_dir=tmp_path / "a")
    b = await start_service(db_dir=tmp_path / "b")
    r = [make_result(f"192.0.2.{i}", hops=3, timestamp=f"2026-01-01T00:0{i}:00Z") for i in range(8)]
    # the same keyed batch reached both instances (a retry through a load balancer)
    await _post(a, r[0:2], **{"Idempotency-Key": "k-1", "X-Node-ID": "n1"})
    await _post(b, r[0:2], **{"Idempotency-Key": "k-1", "X-Node-ID": "n1"})
    # keyless: identical content from the same node twice, and from another node once
    await _post(a, r[2:4], **{"X-Node-ID": "n1"})
    await _post(b, r[2:4], **{"X-Node-ID": "n1"})
    await _post(b, r[2:4], **{"X-Node-ID": "n2"})
    await _post(a, r[4:6], **{"X-Node-ID": "n1"})
    await _post(b, r[6:8], **{"Idempotency-Key": "k-2"})
    go = _go_era_file(tmp_path / "go.db")
    out = tmp_path / "merged.db"

    done = await asyncio.to_thread(_merge, out, a.db_file, b.db_file, go, go)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress bar
    reports = _reports(done)
    assert [(x["batches_added"], x["batches_skipped"]) for x in reports] == [
        (3, 0),
        (2, 2),
        (0, 0),
        (0, 0),
    ]
    assert [(x["results_added"], x["results_skipped"]) for x in reports] == [
        (6, 0),
        (4, 4),
        (3, 0),
        (0, 3),
    ]
    # 2 (k-1) + 2 (n1 keyless) + 2 (n2 keyless) + 2 (a, n1) + 2 (k-2) + 3 Go-era
    assert query(out, "SELECT count(*) FROM ping_results") == [(13,)]
    assert query(out, "SELECT count(*) FROM traceroute_results") == [(13,)]
    assert query(out, "SELECT count(*) FROM traceroute_hops") == [(10 * 3 + 3,)]
    assert query(out, "SELECT node_id, idempotency_key, result_count FROM batches ORDER BY id") == [
        ("n1", "k-1", 2),
        ("n1", None, 2),
        ("n1", None, 2),
        ("n2", None, 2),
        (None, "k-2", 2),
    ]
    # every hop still hangs off its own result: the third hop of 192.0.2.7 is 10.2.0.1
    assert query(
        out,
        "SELECT h.ip FROM traceroute_hops h JOIN traceroute_results t ON t.id = h.traceroute_id"
        " JOIN ping_results p ON p.id = t.ping_result_id WHERE p.ip = '192.0.2.7' AND h.ttl = 3",
    ) == [("10.2.0.1",)]
    assert query(out, "SELECT count(*) FROM ping_results WHERE batch_id IS NULL") == [(3,)]
    assert query(out, "SELECT timestamp FROM ping_results WHERE ip = '203.0.113.1'") == [
        ("2025-06-01 10:00:00.5+02:00",)
    ]
    assert query(out, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    names = {n for (n,) in query(out, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert names >= SEED_INDEX_NAMES  # sealed

    # extending OUT with what it already holds adds nothing; a new batch goes in
    await _post(a, [make_result("198.51.100.9", hops=1)], **{"X-Node-ID": "n3"})
    again = await asyncio.to_thread(_merge, out, a.db_file, b.db_file)
    assert again.returncode == 0, again.stderr
    assert [x["batches_added"] for x in _reports(again)] == [1, 0]
    assert query(out, "SELECT count(*) FROM ping_results") == [(14,)]


def test_out_that_is_not_a_results_file_is_refused(tmp_path: Path) -> None:
    go = _go_era_file(tmp_path / "go.db")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    done = _merge(notes, go)
    assert done.returncode == 1 and "refusing to overwrite" in done.stderr
    assert notes.read_text() == "keep me"
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert _merge(other, go).returncode == 1
    assert query(other, "SELECT name FROM sqlite_master") == [("t",)]
    assert _merge(go, go).returncode == 1  # OUT among the inputs
    assert _merge(tmp_path / "x.db").returncode == 2  # no input: usage


def test_a_bad_input_is_reported_and_the_others_are_merged(tmp_path: Path) -> None:
    go = _go_era_file(tmp_path / "go.db")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    out = tmp_path / "out.db"
    done = _merge(out, bad, tmp_path / "missing.db", go)
    assert done.returncode == 1
    reports = _reports(done)
    assert reports[0]["error"] and reports[1]["error"] and reports[2]["error"] is None
    assert query(out, "SELECT count(*) FROM ping_results") == [(3,)]
    assert bad.read_bytes() == b"not a database" * 100


def test_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    go = _go_era_file(tmp_path / "go.db")
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*CMD, str(tmp_path / "out.db"), str(go)],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while chunk := _read_pty(leader):
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    assert b"3/3 results" in shown and b"[" + b"#" * 40 + b"]" in shown


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO once the other end is closed and drained
        return b""
