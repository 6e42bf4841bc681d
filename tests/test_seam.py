"""The seam between HTTP and storage holds: handlers speak only `storage.seam`,
storage never speaks HTTP, both backends are a `Store`, and the SQLite writer
alone swaps its file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.storage.seam import Store
from output_service.storage.sqlite.store import SqliteStore
from tests.conftest import Running

PACKAGE = Path(__file__).resolve().parent.parent / "output_service"
DRIVERS = ("sqlite3", "aiosqlite", "asyncpg")


def imported(path: Path) -> set[str]:
    """Every module `path` imports by name (top level or inside a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", sorted(p.name for p in (PACKAGE / "handlers").glob("*.py")))
def test_a_handler_imports_no_driver_and_no_backend(name: str) -> None:
    for module in imported(PACKAGE / "handlers" / name):
        root = module.split(".")[0]
        assert root not in DRIVERS, f"handlers/{name} imports {module}"
        assert not module.startswith(
            ("output_service.storage.sqlite", "output_service.storage.postgres")
        ), f"handlers/{name} imports a backend: {module}"


def test_storage_never_imports_aiohttp() -> None:
    for path in sorted((PACKAGE / "storage").rglob("*.py")):
        roots = {m.split(".")[0] for m in imported(path)}
        assert "aiohttp" not in roots, f"{path.relative_to(PACKAGE)} imports aiohttp"


def test_both_backends_are_a_store(tmp_path: Path) -> None:
    config = Config(db_dir=tmp_path)
    sqlite = SqliteStore(config, Metrics(CollectorRegistry()))
    assert isinstance(sqlite, Store)
    assert sqlite.archive is not None  # a file backend: /rotate, /files, /dump exist
    pytest.importorskip("asyncpg")
    from output_service.storage.postgres.store import PostgresStore

    pg = PostgresStore(config, Metrics(CollectorRegistry()))
    assert isinstance(pg, Store)
    assert pg.archive is None  # no files: those routes answer 404 saying why


async def test_only_the_writer_task_swaps_the_live_file(service: Running) -> None:
    writer = service.services.storage.writer  # type: ignore[attr-defined]
    before = writer.path
    with pytest.raises(RuntimeError, match="writer task"):
        await writer.roll_over(lambda: pytest.fail("must not open a file"))
    assert writer.path == before
    reply = await service.results.post("/rotate")
    assert reply.status == 200
    name = (await reply.json())["file"]
    assert writer.path.name == name != before.name
