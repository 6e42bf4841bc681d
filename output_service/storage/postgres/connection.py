"""Connecting to PostgreSQL: the pool, which errors mean "the database is gone",
and a URL that is safe to print (no password, in logs, errors or /health)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# SQLSTATE classes that mean the connection or the server is unusable right now
# (08 connection exception, 57P admin shutdown / crash shutdown / cannot connect now,
# 53 insufficient resources): retry later on a new connection.
_UNAVAILABLE_STATES = ("08", "57P", "53")
CONNECT_TIMEOUT_S = 5.0
RETRYABLE_STATES = frozenset(("40001", "40P01"))  # serialization failure, deadlock
# a connection of our own or one borrowed from the pool
Conn = asyncpg.Connection | PoolConnectionProxy
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database_url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def describe(exc: BaseException, url: str) -> str:
    """A one-line description of a database error that never shows the password."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    secret = password_of(url)
    return text.replace(secret, "***") if secret else text


def is_unavailable(exc: BaseException) -> bool:
    """True when the error means the database cannot be reached (not a bad statement)."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    if isinstance(
        exc,
        asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.InternalClientError,
    ):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES)


async def create_pool(url: str, size: int, command_timeout_s: float) -> asyncpg.Pool:
    """A pool whose connections are opened on demand: a lost server is reconnected to
    by the next acquire, so nothing here needs restarting after an outage."""
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        command_timeout=command_timeout_s,
        timeout=CONNECT_TIMEOUT_S,  # a host that drops packets: 503 soon, not in a minute
        max_inactive_connection_lifetime=60,
        # JIT compiles the export's and the aggregates' expressions for seconds before
        # running them in milliseconds; after five runs of a prepared statement the
        # server would switch to a generic plan that prunes no partition at plan time
        # (a target's week: 3 ms -> 70 ms). Measured: BENCHMARKS.md, PostgreSQL.
        server_settings={
            "application_name": "output-service",
            "jit": "off",
            "plan_cache_mode": "force_custom_plan",
        },
    )
    return pool
