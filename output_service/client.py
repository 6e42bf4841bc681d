"""A Python client for output-service: post results, read them back.

Async first (`Client`, on aiohttp); `SyncClient` wraps it for scripts.

    async with Client("http://host:8081", "http://host:8091", token="...") as c:
        await c.post(results)
        async for result in c.iter_results(ip="192.0.2.1", since="2026-01-01T00:00:00Z"):
            ...

`post` gzips the batch, sends it with a fresh Idempotency-Key (the same key on
every retry, so a retried batch is stored once), retries 5xx and connection
errors with exponential backoff that honours Retry-After, and never retries a
4xx: that raises `ServiceError` with the server's field errors.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL


class ServiceError(Exception):
    """The service refused a request; `body` is its JSON reply (field errors included)."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", body) if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body
        self.errors = body.get("errors", []) if isinstance(body, dict) else []


class Client:
    def __init__(
        self,
        results_url: str = "http://127.0.0.1:8081",
        health_url: str = "http://127.0.0.1:8091",
        *,
        token: str | None = None,
        read_token: str | None = None,
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
    ) -> None:
        self.results_url = results_url.rstrip("/")
        self.health_url = health_url.rstrip("/")
        self._token, self._read_token = token, read_token
        self._retries, self._backoff_s = retries, backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _auth(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    # -- ingest ------------------------------------------------------------------

    async def post(
        self, results: Sequence[dict[str, Any]], *, node_id: str | None = None
    ) -> dict[str, Any]:
        """Store one batch; returns the service's reply once it has committed."""
        body = gzip.compress(json.dumps(list(results), separators=(",", ":")).encode())
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": uuid.uuid4().hex,
            **self._auth(self._token),
        }
        if node_id:
            headers["X-Node-ID"] = node_id
        for attempt in range(self._retries + 1):
            delay = self._backoff_s * 2**attempt * (0.5 + random.random() / 2)
            try:
                async with self.session.post(
                    f"{self.results_url}/results", data=body, headers=headers
                ) as resp:
                    reply = await _json(resp)
                    if resp.status < 400:
                        return reply  # type: ignore[no-any-return]
                    if resp.status < 500 or attempt == self._retries:
                        raise ServiceError(resp.status, reply)
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        delay = max(delay, float(retry_after))
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempt == self._retries:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- reads -------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        clean = {k: _text(v) for k, v in (params or {}).items() if v is not None}
        async with self.session.get(
            f"{self.health_url}{path}", params=clean, headers=self._auth(self._read_token)
        ) as resp:
            reply = await _json(resp)
            if resp.status >= 400:
                raise ServiceError(resp.status, reply)
            return reply

    async def iter_results(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every matching result, newest first, following the cursors page by page."""
        params: dict[str, Any] = {"limit": 1000, **filters}
        while True:
            page = await self._get("/api/results", params)
            for item in page["results"]:
                yield item
            if not page["next"]:
                return
            cursor = URL(page["next"]).query["cursor"]
            params = {**params, "cursor": cursor}

    async def targets(self, **params: Any) -> list[dict[str, Any]]:
        return (await self._get("/api/targets", params))["targets"]  # type: ignore[no-any-return]

    async def target(self, ip: str, **params: Any) -> dict[str, Any]:
        return await self._get(f"/api/targets/{ip}", params)  # type: ignore[no-any-return]

    async def routes(self, ip: str, **params: Any) -> dict[str, Any]:
        return await self._get("/api/routes", {"ip": ip, **params})  # type: ignore[no-any-return]

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._get("/api/nodes"))["nodes"]  # type: ignore[no-any-return]

    async def download_dump(self, path: Path, name: str | None = None) -> int:
        """Save a consistent copy of a results file (default: the current one); bytes written."""
        params = {"file": name} if name else {}
        async with self.session.get(
            f"{self.results_url}/dump", params=params, headers=self._auth(self._token)
        ) as resp:
            if resp.status >= 400:
                raise ServiceError(resp.status, await _json(resp))
            written = 0
            with path.open("wb") as fh:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    fh.write(chunk)
                    written += len(chunk)
        return written


async def _json(resp: aiohttp.ClientResponse) -> Any:
    text = await resp.text()
    try:
        return json.loads(text)
    except ValueError:
        return {"error": text}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SyncClient:
    """The same calls, blocking, for scripts (one event loop of its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client(*args, **kwargs)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def post(self, results: Sequence[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return self._loop.run_until_complete(self._client.post(results, **kw))

    def iter_results(self, **filters: Any) -> Iterator[dict[str, Any]]:
        agen = self._client.iter_results(**filters)
        while True:
            try:
                yield self._loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return

    def targets(self, **params: Any) -> list[dict[str, Any]]:
        return self._loop.run_until_complete(self._client.targets(**params))

    def target(self, ip: str, **params: Any) -> dict[str, Any]:
        return self._loop.run_until_complete(self._client.target(ip, **params))

    def routes(self, ip: str, **params: Any) -> dict[str, Any]:
        return self._loop.run_until_complete(self._client.routes(ip, **params))

    def nodes(self) -> list[dict[str, Any]]:
        return self._loop.run_until_complete(self._client.nodes())

    def download_dump(self, path: Path, name: str | None = None) -> int:
        return self._loop.run_until_complete(self._client.download_dump(path, name))
