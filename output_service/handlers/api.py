"""The query API on the health port: /api/results, /api/targets, /api/targets/{ip},
/api/routes, /api/nodes, /api/hops.

HTTP only: parameters are parsed by `insight.params` into the seam's query
types, the answers come from `services.reads` (which bounds every read), and
errors become JSON: a bad parameter 400, a busy or slow read 503 with
Retry-After, an unknown target 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from output_service.handlers.common import SERVICES, json_error
from output_service.insight import params
from output_service.insight.rows import csv_text
from output_service.storage.seam import BadQuery, ReadBusy, Reads

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CONTENT_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
HOPS_DEFAULT_LIMIT = 100
HOPS_MAX_LIMIT = 10_000


def _guarded(handler: Callable[[web.Request, Reads], Awaitable[web.StreamResponse]]) -> Handler:
    """Map parameter and read errors to JSON replies (never a 500 for either)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        reads = services.reads
        if reads is None:
            return json_error(404, "the query API is not available on this backend")
        try:
            return await handler(request, reads)
        except (params.BadParam, BadQuery) as exc:
            return json_error(400, str(exc))
        except ReadBusy as exc:
            services.metrics.reads_refused.inc()
            return json_error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    return wrapped


def _query(request: web.Request) -> dict[str, str]:
    """The query string as a dict; a repeated parameter is a 400, not a silent pick."""
    seen: dict[str, str] = {}
    for key, value in request.query.items():
        if key in seen:
            raise params.BadParam(f"{key} is given more than once")
        seen[key] = value
    return seen


@_guarded
async def results(request: web.Request, reads: Reads) -> web.StreamResponse:
    query = _query(request)
    parsed = params.parse_results(query, request.headers.get("Accept"))
    if parsed.format != "json":
        return await _stream(request, reads, parsed)
    page = await reads.results_page(parsed.filter, parsed.limit, query.get("cursor"))
    headers = {}
    next_url = None
    if page.next_cursor is not None:
        next_url = str(request.rel_url.with_query({**query, "cursor": page.next_cursor}))
        headers["Link"] = f'<{next_url}>; rel="next"'
    body = {"count": len(page.items), "results": page.items, "next": next_url}
    return web.json_response(body, headers=headers)


async def _stream(
    request: web.Request, reads: Reads, parsed: params.ResultsRequest
) -> web.StreamResponse:
    """ndjson or csv of every match (no limit, no cursor), chunk by chunk."""
    response: web.StreamResponse | None = None
    header = True
    async for chunk in reads.iter_results(parsed.filter):
        if response is None:  # headers go out once the first read has succeeded
            response = web.StreamResponse(headers={"Content-Type": _CONTENT_TYPES[parsed.format]})
            await response.prepare(request)
        if parsed.format == "ndjson":
            await response.write(("\n".join(chunk) + "\n").encode())
        else:
            items = [msgspec.json.decode(line) for text in chunk for line in text.split("\n")]
            await response.write(csv_text(items, header=header).encode())
            header = False
    if response is None:
        response = web.StreamResponse(headers={"Content-Type": _CONTENT_TYPES[parsed.format]})
        await response.prepare(request)
        if parsed.format == "csv":
            await response.write(csv_text([], header=True).encode())
    await response.write_eof()
    return response


@_guarded
async def targets(request: web.Request, reads: Reads) -> web.StreamResponse:
    query = params.parse_targets(_query(request))
    rows = await reads.targets(query)
    return web.json_response({"count": len(rows), "targets": rows})


@_guarded
async def target(request: web.Request, reads: Reads) -> web.StreamResponse:
    services = request.app[SERVICES]
    query = params.parse_series(request.match_info["ip"], _query(request), services.clock())
    found = await reads.target(query)
    if found is None:
        return json_error(404, f"no results for target {query.ip} in this range")
    return web.json_response(found)


@_guarded
async def routes(request: web.Request, reads: Reads) -> web.StreamResponse:
    ip, flt = params.parse_routes(_query(request))
    return web.json_response(await reads.routes(ip, flt))


@_guarded
async def nodes(request: web.Request, reads: Reads) -> web.StreamResponse:
    params.check_known(_query(request), ())
    services = request.app[SERVICES]
    cfg = services.config
    listing = await reads.nodes(cfg.node_silent_after_s, services.clock())
    if services.silent_nodes is not None:
        services.silent_nodes.update(listing)
    return web.json_response(
        {"count": len(listing), "silent_after_s": cfg.node_silent_after_s, "nodes": listing}
    )


async def hops(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.hop_listing is None:
        return json_error(404, "the hop feedback loop is off (input_url is empty)")
    try:
        query = _query(request)
        params.check_known(query, ("limit", "offset"))
        limit = params.parse_int(query, "limit", HOPS_DEFAULT_LIMIT, 1, HOPS_MAX_LIMIT)
        offset = params.parse_int(query, "offset", 0, 0, 10**9)
    except params.BadParam as exc:
        return json_error(400, str(exc))
    try:
        listing = await services.hop_listing(limit, offset)
    except ReadBusy as exc:
        services.metrics.reads_refused.inc()
        return json_error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    if listing["next_offset"] is not None:
        nxt = str(request.rel_url.with_query({**query, "offset": str(listing["next_offset"])}))
        listing["next"] = nxt
        return web.json_response(listing, headers={"Link": f'<{nxt}>; rel="next"'})
    listing["next"] = None
    return web.json_response(listing)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/results", results)
    app.router.add_get("/api/targets", targets)
    app.router.add_get("/api/targets/{ip}", target)
    app.router.add_get("/api/routes", routes)
    app.router.add_get("/api/nodes", nodes)
    app.router.add_get("/api/hops", hops)
