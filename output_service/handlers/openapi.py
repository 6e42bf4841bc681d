"""GET /openapi.json: the OpenAPI 3 document of both ports, served as kept in the repo.

The document is a package file, not generated from the routes, so it is a
promise that tests hold the service to (schemathesis runs against it).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web


@cache
def document() -> bytes:
    return resources.files("output_service").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=document(), content_type="application/json")
