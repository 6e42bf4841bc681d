"""Who may call what: an ingest token for /results, an admin token for the admin endpoints.

A middleware rather than a check in each handler, so an endpoint added later
under a guarded path cannot forget it, and a refusal costs no body read. Paths
are matched both as requested and as routed, so no spelling of a path reaches a
guarded handler unchecked, and the admin paths are guarded even before their
routes exist.

Tokens come from settings as comma-separated lists (old and new token side by
side while clients switch over), are compared in constant time, and are never
logged: refusals log only which scope refused and why.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from output_service.config import Config
from output_service.handlers.common import json_error
from output_service.metrics import Metrics

log = structlog.get_logger("output_service.auth")

INGEST_PATHS = frozenset({"/results"})
ADMIN_PATHS = frozenset({"/rotate", "/dump", "/files"})
REALM = "output-service"


def parse_tokens(text: str) -> tuple[bytes, ...]:
    """`"a, b,,c"` -> (b"a", b"b", b"c"): blanks are dropped, never a valid token."""
    return tuple(t.strip().encode() for t in text.split(",") if t.strip())


def presented_token(request: web.BaseRequest) -> str | None:
    """The token from `Authorization: Bearer <token>` or `X-API-Key: <token>`."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None


def token_matches(given: str, tokens: tuple[bytes, ...]) -> bool:
    """Compare against every token, without stopping early, in constant time each."""
    given_bytes = given.encode("utf-8", "surrogateescape")
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given_bytes, token)
    return found


def is_loopback(remote: str | None) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback; anything unparsable is not."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True, slots=True)
class _Scope:
    name: str
    tokens: tuple[bytes, ...]
    loopback_without_token: bool  # admin: no token means loopback only; ingest: open


def _scope_of(request: web.Request, ingest: _Scope, admin: _Scope) -> _Scope | None:
    resource = request.match_info.route.resource
    paths = {request.path, resource.canonical} if resource is not None else {request.path}
    if paths & ADMIN_PATHS:
        return admin
    if paths & INGEST_PATHS:
        return ingest
    return None


def auth_middleware(config: Config, metrics: Metrics) -> Middleware:
    """The middleware for both apps, with the tokens parsed once."""
    ingest = _Scope("ingest", parse_tokens(config.ingest_token), loopback_without_token=False)
    admin = _Scope("admin", parse_tokens(config.admin_token), loopback_without_token=True)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = _scope_of(request, ingest, admin)
        if scope is None:
            return await handler(request)
        if not scope.tokens:
            if not scope.loopback_without_token or is_loopback(request.remote):
                return await handler(request)
            return _refuse(metrics, scope, "not_loopback")
        given = presented_token(request)
        if given is None:
            return _refuse(metrics, scope, "missing")
        if not token_matches(given, scope.tokens):
            return _refuse(metrics, scope, "wrong")
        return await handler(request)

    return authenticate


def _refuse(metrics: Metrics, scope: _Scope, reason: str) -> web.Response:
    metrics.auth_refusals.labels(scope=scope.name, reason=reason).inc()
    log.warning("refused", scope=scope.name, reason=reason)
    if reason == "not_loopback":
        return json_error(
            403,
            f"{scope.name} endpoints answer only clients on this host while no"
            f" {scope.name}_token is set",
        )
    challenge = f'Bearer realm="{REALM}"'
    if reason == "wrong":
        challenge += ', error="invalid_token"'
    return json_error(
        401,
        f"{reason} {scope.name} token: send Authorization: Bearer <token> or X-API-Key",
        headers={"WWW-Authenticate": challenge},
    )


def log_auth_mode(config: Config) -> None:
    """Say once at start-up what is open, without ever naming a token."""
    ingest_count = len(parse_tokens(config.ingest_token))
    admin_count = len(parse_tokens(config.admin_token))
    if ingest_count == 0:
        log.warning("ingest is open: no ingest_token is set, anyone may POST /results")
    if admin_count == 0:
        log.info("admin endpoints answer loopback clients only: no admin_token is set")
    log.info("auth", ingest_tokens=ingest_count, admin_tokens=admin_count)
