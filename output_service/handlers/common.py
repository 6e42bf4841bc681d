"""Pieces every handler uses: the typed app key and JSON error replies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from output_service.services import Services

SERVICES = web.AppKey("services", Services)


def json_error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """Every error the service sends has this shape: {"status": "error", "error": ...}."""
    return web.json_response(
        {"status": "error", "error": message, **extra}, status=status, headers=headers
    )
