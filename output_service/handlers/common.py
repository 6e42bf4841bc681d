"""Pieces every handler uses: the typed app key and JSON error replies."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from aiohttp import web

from output_service.services import Services

SERVICES = web.AppKey("services", Services)

# Go's encoding/json writes `{"status":"ok","received":1}`: the same bytes here, so a
# client that compares or hashes replies sees no difference.
compact_dumps = partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


def json_reply(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON reply in Go's compact form."""
    return web.json_response(data, status=status, headers=headers, dumps=compact_dumps)


def json_error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """Every error the service sends has this shape: {"status": "error", "error": ...}."""
    return json_reply(
        {"status": "error", "error": message, **extra}, status=status, headers=headers
    )
