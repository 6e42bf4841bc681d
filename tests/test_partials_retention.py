"""Target summaries are held only for retained files (storage/sqlite/reads/partials.py).

With many distinct targets a file's summary is most of its weight in memory;
a file that retention deletes must take its summary with it, or memory grows
with every rotation (the soak did: +100-190 MB a minute).
"""

from __future__ import annotations

from output_service.storage.sqlite.file_names import results_files
from output_service.storage.sqlite.reads.reads import SqliteReads
from tests.conftest import Running, StartService
from tests.test_api import _post, seed_a_n1, seed_a_n2, seed_b


def _held(service: Running) -> set[str]:
    reads = service.services.reads
    assert isinstance(reads, SqliteReads)
    return reads._partials.held_files()


def _retained(service: Running) -> set[str]:
    return {path.name for path in results_files(service.services.config.db_dir)}


async def _targets(service: Running) -> list[dict[str, object]]:
    resp = await service.health.get("/api/targets")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    rows: list[dict[str, object]] = body["targets"]
    return rows


async def test_a_file_deleted_by_retention_drops_its_summary(start_service: StartService) -> None:
    service = await start_service(keep_files=2, prerender_exports=False)
    await _post(service, seed_a_n1(), "n1")
    first = service.db_file.name
    assert (await service.results.post("/rotate")).status == 200
    await _post(service, seed_b(), None)
    await _targets(service)
    assert first in _held(service)

    assert (await service.results.post("/rotate")).status == 200
    await _post(service, seed_a_n2(), "n2")
    assert first not in _retained(service)  # keep_files=2: the first file is gone
    rows = await _targets(service)

    assert _held(service) == _retained(service)
    # and the answer is over the retained files only: n1's results went with the file
    assert sum(int(str(row["results"])) for row in rows) == len(seed_b()) + len(seed_a_n2())
