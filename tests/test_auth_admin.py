"""The admin endpoints let the right callers through.

These need the /rotate, /dump and /files routes (issue 3); until those are
merged they fail with 404, which is expected on the hardening branch alone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import StartService, make_result

ADMIN = "admin-secret-1"
ADMIN_NEXT = "admin-secret-2"


async def test_admin_token_opens_rotate_files_and_dump(
    start_service: StartService, tmp_path: Path
) -> None:
    running = await start_service(admin_token=f"{ADMIN},{ADMIN_NEXT}")
    stored = await running.results.post("/results", json=[make_result("192.0.2.1")])
    assert stored.status == 200

    rotated = await running.results.post("/rotate", headers={"Authorization": f"Bearer {ADMIN}"})
    assert rotated.status == 200
    body = await rotated.json()
    assert body["status"] == "rotated"
    assert body["file"] == running.db_file.name

    files = await running.results.get("/files", headers={"X-API-Key": ADMIN_NEXT})
    assert files.status == 200
    assert len((await files.json())["files"]) == 2

    dump = await running.results.get("/dump", headers={"Authorization": f"Bearer {ADMIN_NEXT}"})
    assert dump.status == 200
    assert dump.headers["Content-Type"] == "application/vnd.sqlite3"
    copy = tmp_path / "dump.db"
    copy.write_bytes(await dump.read())
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_admin_without_token_answers_loopback(start_service: StartService) -> None:
    running = await start_service()
    files = await running.results.get("/files")
    assert files.status == 200
    rotated = await running.results.post("/rotate")
    assert rotated.status == 200
    assert (await rotated.json())["status"] == "rotated"
