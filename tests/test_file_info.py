"""A results file's start and state live in the file (`file_info`); names are
for people. No name on disk can crash start-up or a request, a file named in
the future is not continued nor switches age rotation off, and a file deleted
by hand gives 404 and leaves every listing, never a 500.

The start-up cases run the service as a real process on a real `db_dir`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from output_service.storage.seam import utc_text
from output_service.storage.sqlite import inventory
from output_service.storage.sqlite.schema import SEED_INDEXES, SEED_TABLES
from tests.conftest import make_result
from tests.service_process import ServiceProcess, start_service

DEADLINE_S = 30


def go_file(path: Path, timestamps: list[str]) -> None:
    """A results file as the Go service wrote it: no user_version, no file_info."""
    conn = sqlite3.connect(path)
    conn.executescript(SEED_TABLES + SEED_INDEXES)
    for n, ts in enumerate(timestamps):
        conn.execute(
            "INSERT INTO ping_results (ip, sent, received, packet_loss, avg_rtt, timestamp,"
            " created_at) VALUES (?, 4, 4, 0, 1000, ?, ?)",
            (f"192.0.2.{n + 1}", ts, ts),
        )
    conn.commit()
    conn.close()


def recorded(path: Path) -> tuple[str, str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT started_at, state FROM file_info").fetchone()
    finally:
        conn.close()
    return str(row[0]), str(row[1])


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: Any) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def stop(service: ServiceProcess) -> None:
    assert service.terminate() == 0, service.stderr()


# -- migration: files from before file_info ------------------------------------


def test_a_go_file_gets_its_start_from_its_name(tmp_path: Path) -> None:
    path = tmp_path / "results_2026-01-02_03-04-05.db"
    go_file(path, ["2026-01-05T00:00:00Z"])
    report = inventory.inspect(path, utc_text(0), now=time.time())
    assert report.started == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert recorded(path) == ("2026-01-02T03:04:05.000000Z", "sealed")


def test_a_name_that_is_no_date_takes_the_earliest_row(tmp_path: Path) -> None:
    path = tmp_path / "results_2026-02-30_00-00-00.db"
    go_file(path, ["2026-01-07T10:00:00Z", "2026-01-06T09:30:00Z"])
    report = inventory.inspect(path, utc_text(0), now=time.time())
    assert report.started == moment("2026-01-06T09:30:00Z")
    assert recorded(path)[0] == "2026-01-06T09:30:00.000000Z"


def test_no_date_and_no_rows_takes_the_mtime(tmp_path: Path) -> None:
    path = tmp_path / "results_2026-13-01_00-00-00.db"
    go_file(path, [])
    os.utime(path, (1_767_225_600, 1_767_225_600))
    report = inventory.inspect(path, utc_text(0), now=time.time())
    assert report.started == 1_767_225_600
    assert report.started_in_future is False


def test_a_start_in_the_future_is_brought_back_to_now(tmp_path: Path) -> None:
    path = tmp_path / "results_2099-01-01_00-00-00.db"
    go_file(path, [])
    now = 1_780_000_000.0
    report = inventory.inspect(path, utc_text(0), now=now)
    assert report.started_in_future is True
    assert report.started == now
    assert moment(recorded(path)[0]) == now


# -- the real process ------------------------------------------------------------


def test_a_name_with_no_date_neither_crashes_startup_nor_files(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    odd = db_dir / "results_2026-02-30_00-00-00.db"
    go_file(odd, ["2026-01-06T09:30:00Z"])
    service = start_service(db_dir)
    try:
        status, body = get(service.url("/files"))
        assert status == 200, body
        by_name = {f["name"]: f for f in body["files"]}
        assert by_name[odd.name]["created"] == "2026-01-06T09:30:00.000000Z"
        assert by_name[odd.name]["results"] == 1
        assert post(service.url("/results"), [make_result("198.51.100.1")]) == 200
        status, body = get(service.url("/files"))
        assert status == 200
    finally:
        stop(service)


def test_a_file_named_in_the_future_is_sealed_not_continued(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    future = db_dir / "results_2099-01-01_00-00-00.db"
    go_file(future, ["2026-01-06T09:30:00Z"])
    before = time.time()
    service = start_service(db_dir, "--rotation-days=1")
    try:
        status, body = get(service.url("/files"))
        assert status == 200, body
        names = [f["name"] for f in body["files"]]
        assert len(names) == 2 and names[0] == future.name
        (current,) = [f for f in body["files"] if f["current"]]
        assert current["name"] != future.name
        # both starts are the clock's now, not 2099: age rotation stays on
        for listed in body["files"]:
            assert before - 1 <= moment(listed["created"]) <= time.time() + 1
        assert recorded(future)[1] == "sealed"
        started, state = recorded(db_dir / current["name"])
        assert state == "live"
        assert before - 1 <= moment(started) <= time.time() + 1
    finally:
        stop(service)


def test_a_file_deleted_by_hand_is_404_and_leaves_every_listing(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    db_dir.mkdir()
    service = start_service(db_dir)
    try:
        assert post(service.url("/results"), [make_result("192.0.2.10")]) == 200
        first = get(service.url("/files"))[1]["files"][0]["name"]
        request = urllib.request.Request(service.url("/rotate"), data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            assert response.status == 200
        assert post(service.url("/results"), [make_result("192.0.2.11")]) == 200
        for leftover in (first, first + "-wal", first + "-shm"):
            (db_dir / leftover).unlink(missing_ok=True)

        status, body = get(service.url(f"/dump?file={first}"))
        assert status == 404, body
        status, body = get(service.url("/files"))
        assert status == 200
        assert first not in [f["name"] for f in body["files"]]
        assert body["count"] == 1
        status, body = get(service.health_url("/recent?limit=10"))
        assert status == 200, body
        assert [r["ip"] for r in body] == ["192.0.2.11"]
        status, body = get(service.health_url("/api/results?limit=10"))
        assert status == 200, body
        assert [r["ip"] for r in body["results"]] == ["192.0.2.11"]
    finally:
        stop(service)
