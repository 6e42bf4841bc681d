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
import contextlib
import resource
import socket
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


LISTEN_BACKLOG = 128  # aiohttp's default: pending connections wait in the kernel, no fds


def fd_budget(limit: int, max_connections: int, health_max_connections: int) -> FdBudget:
    """Fit the configured caps under `limit` descriptors.

    Kept back: an eighth of the limit (at least FD_RESERVE_MIN) for files (results
    files with their -wal and -shm, state.db, readers, dump snapshots). Refused
    connections need no room: they are closed as they are accepted. The health
    port keeps at most a quarter of the rest; the results port gets what remains.
    A cap is only ever lowered, never raised above its setting.
    """
    reserve = max(FD_RESERVE_MIN, limit // 8)
    room = max(2, limit - reserve)
    health = max(1, min(health_max_connections, room // 4))
    results = max(1, min(max_connections, room - health))
    return FdBudget(limit, reserve, results, health, LISTEN_BACKLOG, LISTEN_BACKLOG)


class ConnectionGate:
    """Counts one port's open connections; past its cap they are refused."""

    def __init__(
        self, port_name: str, cap: int, backlog: int, gauge: Gauge, refused: Counter
    ) -> None:
        self.port_name = port_name
        self.cap = cap
        self.backlog = backlog
        self.open = 0
        self._gauge = gauge.labels(port=port_name)
        self._refused = refused.labels(port=port_name)

    @property
    def full(self) -> bool:
        return self.open >= self.cap

    def refuse(self, conn: socket.socket) -> None:
        """A canned 503 (a client that has sent its request can read it) and close,
        now: the descriptor is free before the next connection is accepted."""
        self._refused.inc()
        with contextlib.suppress(OSError):
            conn.send(FULL_REPLY)
        conn.close()

    def counted(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        self.open += 1
        self._gauge.set(self.open)
        return _Counted(inner, self)

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


class _Listener:
    """A listening socket with our own accept loop (asyncio's would accept a whole
    backlog of connections before any could be refused, and log a traceback per
    failed accept). Has what aiohttp asks of a server: `sockets` and `close()`."""

    def __init__(
        self, sock: socket.socket, gate: ConnectionGate, factory: Any, errors: AcceptErrorLog
    ) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._gate = gate
        self._factory = factory
        self._errors = errors
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self._gate.backlog):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE and friends: wait a second, as asyncio does
                self._errors.failed(exc)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(1.0, self._resume)
                return
            if self._gate.full:
                self._gate.refuse(conn)
                continue
            conn.setblocking(False)
            protocol = self._gate.counted(self._factory())
            task = self._loop.create_task(self._connect(conn, protocol))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, protocol: asyncio.Protocol) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except Exception:
            conn.close()
            with contextlib.suppress(Exception):  # aiohttp's protocol never saw it open
                protocol.connection_lost(None)

    def _resume(self) -> None:
        if self._sock.fileno() != -1:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


class LimitedTCPSite(web.TCPSite):
    """aiohttp's TCPSite listening through a _Listener with a ConnectionGate."""

    __slots__ = ("_errors", "_gate", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        gate: ConnectionGate,
        errors: AcceptErrorLog,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=gate.backlog)
        self._gate = gate
        self._errors = errors
        self._sock = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen too
        server = self._runner.server
        assert server is not None
        sock = self._sock
        if sock is None:
            family = socket.AF_INET6 if ":" in (self._host or "") else socket.AF_INET
            sock = socket.create_server(
                (self._host or "", self._port), family=family, backlog=self._backlog
            )
        else:  # bound before storage opened (cli._bind): only the backlog is ours
            sock.listen(self._backlog)
        sock.setblocking(False)
        listener = _Listener(sock, self._gate, server, self._errors)
        self._server = listener  # type: ignore[assignment]
        self._bound_port = sock.getsockname()[1]


class AcceptErrorLog:
    """Failed accepts, logged at most once per ACCEPT_LOG_EVERY_S with how many
    failed since the last line. Also a loop exception handler, for asyncio's own
    servers' reports of the same thing; anything else is handed on."""

    def __init__(self, counter: Counter, clock: Any = time.monotonic) -> None:
        self._counter = counter
        self._clock = clock
        self._held = 0
        self._last = float("-inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self.failed(context.get("exception"))

    def failed(self, exc: object) -> None:
        self._counter.inc()
        self._held += 1
        now = self._clock()
        if now - self._last < ACCEPT_LOG_EVERY_S:
            return
        log.error(
            "accept failed: out of descriptors or memory",
            error=str(exc),
            failures=self._held,
            since_s=None if self._last == float("-inf") else round(now - self._last, 1),
        )
        self._held = 0
        self._last = now
