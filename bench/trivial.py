"""Two reference servers for `make bench`, as their own process.

`results`: the fastest a plain aiohttp handler can answer the load generator:
it reads the whole body and answers the service's JSON (`{"status": "ok",
"received": N}`), nothing else. The service's 1-result cells are compared with
it: what is left between them is the service's own work per request.

`input`: a loopback stand-in for the input service (`POST /hops` answers 200),
so cells with the hop loop on send their hops somewhere real.

    python -m bench.trivial results|input   (prints a "listening" JSON line)
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from bench.listen import serve_until_sigterm

OK_BODY = b'{"status": "ok", "received": 1}'


async def post_results(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=OK_BODY, content_type="application/json")


async def post_hops(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status": "ok"}', content_type="application/json")


async def serve(mode: str) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    if mode == "results":
        app.router.add_post("/results", post_results)
    else:
        app.router.add_post("/hops", post_hops)
    await serve_until_sigterm(app)


if __name__ == "__main__":
    if sys.argv[1:] not in (["results"], ["input"]):
        raise SystemExit("usage: python -m bench.trivial results|input")
    asyncio.run(serve(sys.argv[1]))
