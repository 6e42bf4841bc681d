"""Who may call what: an ingest token for /results, an admin token for the admin
endpoints, a read token for everything that returns stored data.

Checked by the front middleware (handlers/middleware.py) rather than in each
handler, so an endpoint added later under a guarded path cannot forget it, and a
refusal costs no body read. Paths
are matched both as requested and as routed, so no spelling of a path reaches a
guarded handler unchecked, and the admin paths are guarded even before their
routes exist.

Tokens come from settings as comma-separated lists (old and new token side by
side while clients switch over), are compared in constant time, and are never
logged: refusals log only which scope refused and why.

The read scope is decided by path the other way round: every path is guarded
except the few that carry no stored data (OPEN_PATHS: what orchestrators and
Prometheus poll), so an endpoint added later (/api/*, a status page at /, its
/static/*) is guarded without anyone remembering to. A browser can use it: HTTP
Basic with the token as the password is accepted, and the 401 asks for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

import structlog
from aiohttp import web

from output_service.config import Config
from output_service.handlers.common import json_error
from output_service.metrics import Metrics

log = structlog.get_logger("output_service.auth")

INGEST_PATHS = frozenset({"/results"})
ADMIN_PATHS = frozenset({"/rotate", "/dump", "/files"})
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
REALM = "output-service"


def parse_tokens(text: str) -> tuple[bytes, ...]:
    """`"a, b,,c"` -> (b"a", b"b", b"c"): blanks are dropped, never a valid token."""
    return tuple(t.strip().encode() for t in text.split(",") if t.strip())


def presented_token(request: web.BaseRequest) -> str | None:
    """The token from `Authorization: Bearer <token>`, `Authorization: Basic` (any user
    name, the token as password: what a browser sends) or `X-API-Key: <token>`."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password or None
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


class Guard:
    """The access check for both apps, with the tokens parsed once: `refusal` is
    the reply that refuses a request, or None to let it through. Called by the
    front middleware (handlers/middleware.py) before any handler runs."""

    __slots__ = ("_admin", "_ingest", "_metrics", "_read", "_scope_by_route")

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self._metrics = metrics
        self._ingest = _Scope(
            "ingest", parse_tokens(config.ingest_token), loopback_without_token=False
        )
        self._admin = _Scope("admin", parse_tokens(config.admin_token), loopback_without_token=True)
        # an admin token reads too; with no read_token set, reads stay open as before
        read_tokens = parse_tokens(config.read_token)
        self._read = _Scope(
            "read",
            read_tokens + self._admin.tokens if read_tokens else (),
            loopback_without_token=False,
        )
        # the scope of a request to a route's own path, decided once per route (a
        # request whose path differs from its route's pattern is decided each time)
        self._scope_by_route: dict[str, _Scope | None] = {}

    def scope_of(self, request: web.Request) -> _Scope | None:
        resource = request.match_info.route.resource
        path = request.path
        if resource is None:
            return self._decide({path})
        canonical = resource.canonical
        if path != canonical:
            return self._decide({path, canonical})
        try:
            return self._scope_by_route[path]
        except KeyError:
            scope = self._scope_by_route[path] = self._decide({path})
            return scope

    def _decide(self, paths: set[str]) -> _Scope | None:
        if paths & ADMIN_PATHS:
            return self._admin
        if paths & INGEST_PATHS:
            return self._ingest
        if paths <= OPEN_PATHS:
            return None
        return self._read

    def refusal(self, request: web.Request) -> web.Response | None:
        scope = self.scope_of(request)
        if scope is None:
            return None
        if not scope.tokens:
            if not scope.loopback_without_token or is_loopback(request.remote):
                return None
            return _refuse(self._metrics, scope, "not_loopback")
        given = presented_token(request)
        if given is None:
            return _refuse(self._metrics, scope, "missing")
        if not token_matches(given, scope.tokens):
            return _refuse(self._metrics, scope, "wrong")
        return None


def _refuse(metrics: Metrics, scope: _Scope, reason: str) -> web.Response:
    metrics.auth_refusals.labels(scope=scope.name, reason=reason).inc()
    log.warning("refused", scope=scope.name, reason=reason)
    if reason == "not_loopback":
        return json_error(
            403,
            f"{scope.name} endpoints answer only clients on this host while no"
            f" {scope.name}_token is set",
        )
    if scope.name == "read":  # Basic, so that a browser asks for the token
        challenge = f'Basic realm="{REALM}"'
        how = "send Authorization: Bearer <token>, X-API-Key, or Basic with the token as password"
    else:
        challenge = f'Bearer realm="{REALM}"'
        if reason == "wrong":
            challenge += ', error="invalid_token"'
        how = "send Authorization: Bearer <token> or X-API-Key"
    return json_error(
        401, f"{reason} {scope.name} token: {how}", headers={"WWW-Authenticate": challenge}
    )


def log_auth_mode(config: Config) -> None:
    """Say once at start-up what is open, without ever naming a token."""
    ingest_count = len(parse_tokens(config.ingest_token))
    admin_count = len(parse_tokens(config.admin_token))
    read_count = len(parse_tokens(config.read_token))
    if read_count == 0:
        log.info("reads are open: no read_token is set, anyone may GET /stats and /recent")
    if ingest_count == 0:
        log.warning("ingest is open: no ingest_token is set, anyone may POST /results")
    if admin_count == 0:
        log.info("admin endpoints answer loopback clients only: no admin_token is set")
    log.info("auth", ingest_tokens=ingest_count, admin_tokens=admin_count, read_tokens=read_count)
