"""Pre-rendered export items of sealed files (storage/sqlite/reads/prerender.py).

The export of a sealed file streams its side file's stored text; the answers
must be byte for byte those of the slow path (SQLite building each item), for
every filter, and a side file is only used for the very file it was built from.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from output_service.storage.sqlite.file_names import results_files
from output_service.storage.sqlite.reads.prerender import CACHE_DIR
from tests.conftest import Running, StartService
from tests.small_fs import mounted_tmpfs
from tests.test_api import A, _post, seed_a_n1, seed_a_n2, seed_b

EXPORTS = ["", f"&ip={A}", "&node=n1", "&failed=true", "&since=2026-01-01T00:30:00Z"]


async def _seed_two_files(start_service: StartService, **overrides: object) -> Running:
    """A sealed file (A from n1, B without a node) and the live one (A from n2)."""
    service = await start_service(**overrides)
    await _post(service, seed_a_n1(), "n1")
    await _post(service, seed_b(), None)
    assert (await service.results.post("/rotate")).status == 200
    await _post(service, seed_a_n2(), "n2")
    return service


async def _exports(service: Running) -> list[str]:
    out = []
    for extra in EXPORTS:
        resp = await service.health.get(f"/api/results?format=ndjson{extra}")
        assert resp.status == 200
        out.append(await resp.text())
    return out


async def _round(service: Running) -> None:
    upkeep = service.services.read_upkeep
    assert upkeep is not None
    await upkeep.round()


def _side(service: Running, results_file: Path) -> Path:
    return service.services.config.db_dir / CACHE_DIR / (results_file.name + ".items")


async def _rendered(start_service: StartService) -> tuple[Running, Path, Path]:
    """The two files seeded, one upkeep round run: (service, sealed file, its side file)."""
    service = await _seed_two_files(start_service)
    sealed, _ = results_files(service.services.config.db_dir)
    await _round(service)
    return service, sealed, _side(service, sealed)


def _on_side(side: Path, sql: str) -> list[tuple[object, ...]]:
    """Run `sql` on a side file with a separate connection (committed)."""
    conn = sqlite3.connect(side, isolation_level=None)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_sealed_files_export_the_same_bytes_from_their_side_file(
    start_service: StartService,
) -> None:
    service = await _seed_two_files(start_service)
    sealed, live = results_files(service.services.config.db_dir)
    slow = await _exports(service)
    await _round(service)
    assert _side(service, sealed).is_file() and not _side(service, live).exists()
    # every result of the sealed file: 10 of A, 3 of B
    assert _on_side(_side(service, sealed), "SELECT count(*) FROM items") == [(13,)]
    assert await _exports(service) == slow
    assert len(slow[0].splitlines()) == 17


async def test_the_export_reads_the_side_file_and_only_for_its_own_file(
    start_service: StartService,
) -> None:
    service, sealed, side = await _rendered(start_service)
    slow = await _exports(service)
    # mark one stored item: the export must show it
    _on_side(side, "UPDATE items SET item = item || ',\"marked\":1' WHERE id = 1")
    marked = (await _exports(service))[0]
    assert marked.count('"marked":1') == 1
    # the file restored from a copy (a new inode): the side file is not its own
    copy = sealed.with_name("copy")
    shutil.copy2(sealed, copy)
    copy.replace(sealed)
    assert await _exports(service) == slow
    await _round(service)  # rebuilt for the restored file
    assert await _exports(service) == slow
    assert _on_side(side, "SELECT count(*) FROM items WHERE item LIKE '%marked%'") == [(0,)]


async def test_side_files_of_files_gone_and_unfinished_builds_are_deleted(
    start_service: StartService,
) -> None:
    service, sealed, side = await _rendered(start_service)
    leftover = side.with_name("results_2025-01-01_00-00-00.db.items.tmp")
    leftover.write_bytes(b"half a build")
    sealed.unlink()  # as retention does
    await _round(service)
    assert not side.exists() and not leftover.exists()
    lines = (await _exports(service))[0].splitlines()
    assert len(lines) == 4  # the live file's results, from the slow path


async def test_prerendering_can_be_turned_off(start_service: StartService) -> None:
    service = await _seed_two_files(start_service, prerender_exports=False)
    slow = await _exports(service)
    await _round(service)
    assert not (service.services.config.db_dir / CACHE_DIR).exists()
    assert await _exports(service) == slow


async def test_a_restart_takes_the_sealed_files_summary_from_its_side_file(
    start_service: StartService,
) -> None:
    service, _, side = await _rendered(start_service)
    before = await _targets(service)
    await service.results.close()
    await service.health.close()
    again = await start_service()
    assert await _targets(again) == before
    await again.results.close()
    await again.health.close()
    # the kept summary is what a restart reads for the sealed file: B is only in it
    _on_side(side, "UPDATE targets SET results = 1000 WHERE ip = '198.51.100.7'")
    third = await start_service()
    by_ip = {t["ip"]: t for t in await _targets(third)}
    assert by_ip["198.51.100.7"]["results"] == 1000 and by_ip[A]["results"] == 14


async def _targets(service: Running) -> list[dict[str, object]]:
    resp = await service.health.get("/api/targets")
    assert resp.status == 200
    body = await resp.json()
    return list(body["targets"])


async def test_no_side_file_while_disk_is_short(
    start_service: StartService, tmp_path: Path
) -> None:
    """On a real 16 MB filesystem (below the 64 MB a build leaves free) nothing
    is rendered: the writer's disk comes first, and exports take the slow path."""
    with mounted_tmpfs(tmp_path, "16m") as small:
        service = await _seed_two_files(start_service, db_dir=small / "data")
        slow = await _exports(service)
        await _round(service)
        cache = small / "data" / CACHE_DIR
        assert not cache.exists() or list(cache.iterdir()) == []
        assert await _exports(service) == slow
        await service.results.close()
        await service.health.close()


async def test_side_files_removed_by_hand_leave_exports_complete(
    start_service: StartService,
) -> None:
    service, _, side = await _rendered(start_service)
    slow = await _exports(service)  # from the side file by now
    shutil.rmtree(side.parent)
    assert await _exports(service) == slow
