"""The SQLite backend's archive capability (the seam's `Archive`): rotate,
list the retained files, dump one. Only a file backend has it; the routes
`/rotate`, `/files` and `/dump` exist because this object does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from output_service.storage.seam import Dump
from output_service.storage.sqlite.catalog import Catalog
from output_service.storage.sqlite.rotator import Rotator
from output_service.storage.sqlite.writer import Writer


class SqliteArchive:
    def __init__(self, rotator: Rotator, catalog: Catalog, writer: Callable[[], Writer]) -> None:
        self._rotator = rotator
        self._catalog = catalog
        self._writer = writer  # the open store's writer

    async def rotate(self) -> str:
        """Start a new file now (between transactions); returns its name once
        the old one is sealed."""
        return await self._rotator.rotate_now(self._writer())

    async def files(self) -> list[dict[str, Any]]:
        return await self._catalog.files()

    def dump(self, name: str | None = None) -> contextlib.AbstractAsyncContextManager[Dump]:
        """A consistent copy of `name` (default: the current file) to stream."""
        return self._catalog.dump(name)
