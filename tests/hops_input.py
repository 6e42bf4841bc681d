"""A real loopback HTTP server standing in for the input service, for the hop tests.

It records every POST /hops it gets, answers from a script of replies (then
200), and lets a test wait, with a deadline, until it has seen what it expects.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

DEADLINE_S = 15.0


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class InputService:
    """Accepts `POST /hops {"hops": [...]}` on 127.0.0.1."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.accepted: list[str] = []  # hops of the requests answered with a 2xx
        self.requests: list[tuple[int, list[str]]] = []  # (status sent, hops) per request
        self.replies: deque[Reply] = deque()
        self.hold: asyncio.Event | None = None  # when set up, requests wait for it
        self.arrived = 0  # requests received, held ones included
        self._changed = asyncio.Condition()
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hops"

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.accepted)

    async def start(self) -> InputService:
        app = web.Application()
        app.router.add_post("/hops", self._hops)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        await self._server.start_server()
        self.port = self._server.port or self.port
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def wait_until(self, predicate: Callable[[], bool], what: str = "") -> None:
        """Return once `predicate()` holds; fail after DEADLINE_S."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), DEADLINE_S)
            except TimeoutError:
                raise AssertionError(
                    f"input service: timed out waiting for {what or predicate}; "
                    f"requests so far: {self.requests}"
                ) from None

    async def wait_for_hops(self, count: int) -> None:
        await self.wait_until(lambda: len(self.accepted) >= count, f"{count} hops")

    async def _hops(self, request: web.Request) -> web.Response:
        hops = (await request.json())["hops"]
        assert isinstance(hops, list)
        async with self._changed:
            self.arrived += 1
            self._changed.notify_all()  # a held request must still wake wait_until
        if self.hold is not None:
            await self.hold.wait()
        reply = self.replies.popleft() if self.replies else Reply(200, '{"status":"ok"}')
        async with self._changed:
            self.requests.append((reply.status, hops))
            if 200 <= reply.status < 300:
                self.accepted.extend(hops)
            self._changed.notify_all()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


def free_port() -> int:
    """A loopback port nobody listens on (for an input service that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
