"""Bounds on sockets and descriptors: the fd limit, a connection cap per port, and
a quiet log when accept() fails.

Without them, idle connections to the results port can use up every descriptor:
then accept() fails on both ports (the health port goes dark with the results
port), SQLite cannot open a file, and asyncio logs a traceback for every failed
accept, many a second. So:

- at start-up the soft RLIMIT_NOFILE is raised to the hard limit (as Go does);
- each port has its own cap on open connections, checked when a connection is
  accepted: past it, the connection gets a canned 503 and is closed at once, so
  it holds its descriptor for microseconds. The caps are fitted under the
  descriptor limit with room left for files (`fd_budget`), so a flood on the
  results port leaves the health port its own budget, and SQLite its files;
- accept errors are logged at most once per ACCEPT_LOG_EVERY_S, with a count.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge

log = structlog.get_logger("output_service.net")

ACCEPT_LOG_EVERY_S = 5.0
ACCEPT_ERROR = "socket.accept() out of system resource"
FD_RESERVE_MIN = 64  # descriptors kept for files, threads' pipes, the hop sender
_FULL_BODY = b'{"status": "error", "error": "too many open connections", "limit": "connections"}'
FULL_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_FULL_BODY), _FULL_BODY)
)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. a sandbox that refuses it: keep what we have
        return soft, soft
    return soft, hard


@dataclass(frozen=True, slots=True)
class FdBudget:
    """How the descriptor limit is shared: `reserve` is left for everything but
    open client connections, the rest split between the two ports' caps."""

    limit: int
    reserve: int
    results: int
    health: int
    results_backlog: int
    health_backlog: int


HEALTH_BACKLOG = 16
RESULTS_BACKLOG = 128  # aiohttp's default


def fd_budget(limit: int, max_connections: int, health_max_connections: int) -> FdBudget:
    """Fit the configured caps under `limit` descriptors.

    Kept back: an eighth of the limit (at least FD_RESERVE_MIN) for files (results
    files with their -wal and -shm, state.db, readers, dump snapshots), and each
    port's listen backlog: asyncio accepts up to a backlog of connections in one go
    before any of them can be refused and closed, so each is a burst of descriptors
    in use at once. The results port's backlog shrinks with a small limit. The
    health port keeps at most a quarter of the rest; the results port gets what
    remains. A cap is only ever lowered, never raised above its setting.
    """
    results_backlog = max(HEALTH_BACKLOG, min(RESULTS_BACKLOG, limit // 16))
    reserve = max(FD_RESERVE_MIN, limit // 8) + results_backlog + HEALTH_BACKLOG
    room = max(2, limit - reserve)
    health = max(1, min(health_max_connections, room // 4))
    results = max(1, min(max_connections, room - health))
    return FdBudget(limit, reserve, results, health, results_backlog, HEALTH_BACKLOG)


class ConnectionGate:
    """Counts one port's open connections and refuses those past its cap."""

    def __init__(
        self, port_name: str, cap: int, backlog: int, gauge: Gauge, refused: Counter
    ) -> None:
        self.port_name = port_name
        self.cap = cap
        self.backlog = backlog
        self.open = 0
        self._gauge = gauge.labels(port=port_name)
        self._refused = refused.labels(port=port_name)

    def wrap(self, factory: Any) -> Any:
        """A protocol factory for loop.create_server: counted protocols from
        `factory` while under the cap, a refusal past it. Counted when the
        connection is accepted (not when it first sends), so a burst of accepts
        cannot overshoot."""

        def make() -> asyncio.Protocol:
            if self.open >= self.cap:
                self._refused.inc()
                return _Refusal()
            self.open += 1
            self._gauge.set(self.open)
            return _Counted(factory(), self)

        return make

    def closed(self) -> None:
        self.open -= 1
        self._gauge.set(self.open)


class _Counted(asyncio.Protocol):
    """Passes every event on to aiohttp's protocol; gives the slot back at the end."""

    __slots__ = ("_gate", "_inner")

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self._inner = inner
        self._gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._gate.closed()


class _Refusal(asyncio.Protocol):
    """A connection past the cap: a 503 a client can read, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(FULL_REPLY)
        transport.close()


class LimitedTCPSite(web.TCPSite):
    """aiohttp's TCPSite with a ConnectionGate in front of its protocol factory."""

    __slots__ = ("_gate",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate) -> None:
        super().__init__(runner, host, port)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen too
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._gate.wrap(server), self._host, self._port, backlog=self._backlog
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


class AcceptErrorLog:
    """A loop exception handler: asyncio reports every failed accept() with a
    traceback (and retries a second later); this logs one line per
    ACCEPT_LOG_EVERY_S with how many failed, and hands anything else on."""

    def __init__(self, counter: Counter, clock: Any = time.monotonic) -> None:
        self._counter = counter
        self._clock = clock
        self._held = 0
        self._last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self._counter.inc()
        self._held += 1
        now = self._clock()
        if now - self._last < ACCEPT_LOG_EVERY_S:
            return
        log.error(
            "accept failed: out of descriptors or memory",
            error=str(context.get("exception")),
            failures=self._held,
            since_s=None if self._last == float("-inf") else round(now - self._last, 1),
        )
        self._held = 0
        self._last = now
