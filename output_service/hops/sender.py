"""The event-loop half of the hop loop: drain the outbox to the input service.

One task, one `ClientSession`, and the backend's outbox (the seam's
`HopOutbox`: state.db on SQLite, a shared table on PostgreSQL). The sender
claims the oldest hops, posts them, and settles the claim: delivered after a
2xx, dead-lettered after a refusal, released after a failure (so the next try
claims the oldest again: on a shared database, any instance may). A hop
leaves the outbox only after a 2xx or a refusal. Connection errors, timeouts,
5xx and 429 are retried with capped exponential backoff and full jitter (or
after `Retry-After` when the reply has one); any other 4xx means the input
service will never take these hops, so they go to dead_letters with its reply.
Every wait is on an Event, so shutdown never waits out a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp
import structlog

from output_service.hops.recorder import HopCounts
from output_service.hops.throttle import Throttle
from output_service.metrics import Metrics
from output_service.storage.seam import HopOutbox, WaitingHop

log = structlog.get_logger("output_service.hops")

RETRY_AFTER_MAX_S = 3600.0
RESPONSE_LOGGED = 1000  # characters of a refusal kept in the log and in dead_letters
FAILURE_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class SenderSettings:
    url: str
    batch_size: int
    flush_interval_s: float
    backoff_base_s: float
    backoff_max_s: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: `outcome` is the metric label."""

    outcome: str
    status: int = 0
    detail: str = ""
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "ok"

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"


class HopSender:
    """Drains the outbox while running; `stop()` makes one last short attempt."""

    def __init__(
        self,
        outbox: HopOutbox,
        counts: HopCounts,
        metrics: Metrics,
        settings: SenderSettings,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[float], float] = lambda top: random.uniform(0, top),
        pause: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._outbox = outbox
        self._claimed: list[WaitingHop] = []  # claimed and not yet settled
        self._counts = counts
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._jitter = jitter
        self._pause = pause
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failures = 0
        self._down_since: float | None = None
        self._failure_log = Throttle(FAILURE_LOG_INTERVAL_S, clock)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_by: float | None = None  # monotonic end of the final flush

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s)
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hop-sender")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A full batch is waiting: send it now rather than at the next flush."""
        self._wake.set()

    def begin_stop(self, final_flush_s: float) -> None:
        """Shutdown has begun: the final flush starts now, alongside the drain of
        the ports, and ends `final_flush_s` from now whatever `stop` is given, so
        a drain that takes the whole grace leaves no flush to run after it."""
        if self._stop_by is None:
            self._stop_by = time.monotonic() + final_flush_s
        self._stopping.set()

    async def stop(self, final_flush_s: float) -> None:
        """Stop waiting, let the loop send what waits for up to `final_flush_s`
        (or until the deadline `begin_stop` set; until the outbox is empty or an
        attempt fails), then cancel it and close. Whatever is left stays in the
        outbox for the next start."""
        self.begin_stop(final_flush_s)
        assert self._stop_by is not None
        if self._task is not None:
            try:
                left = max(0.0, self._stop_by - time.monotonic())
                await asyncio.wait_for(asyncio.shield(self._task), left)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._claimed:  # cut mid-delivery: give them back for the next sender
            with contextlib.suppress(Exception):
                await self._outbox.release(self._claimed)
            self._claimed = []
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        # After `stop()` the loop drains once more (the final flush) and returns.
        while True:
            try:
                await self._drain()
            except Exception as exc:  # outbox trouble (disk, lock, database): keep going
                self._failures += 1
                self._failure_log.warning(
                    "hop sender cannot use state.db; will retry",
                    error=f"{type(exc).__name__}: {exc}",
                )
                await self._wait(self._stopping, self._retry_delay(Attempt("state_error")))
            if self._stopping.is_set():
                return
            self._wake.clear()
            if self._counts.depth < self._settings.batch_size:
                await self._wait(self._wake, self._settings.flush_interval_s)

    async def _drain(self) -> None:
        """Send batches until the outbox is empty; back off after a failure
        (while stopping, give up instead: the hops stay for the next start)."""
        while True:
            batch = await self._outbox.claim(self._settings.batch_size)
            self._claimed = batch
            self._counts.oldest_queued_at = batch[0].queued_at if batch else None
            if not batch:
                return
            attempt = await self._post([h.ip for h in batch])
            self._metrics.hop_send_attempts.labels(outcome=attempt.outcome).inc()
            if attempt.delivered:
                removed = await self._settle(self._outbox.delivered, batch)
                with self._counts.lock:
                    self._counts.sent += removed
                self._metrics.hops_sent.inc(removed)
                self._recovered()
            elif attempt.refused:
                await self._dead_letter(batch, attempt)
                self._recovered()
            else:
                self._claimed = []
                await self._outbox.release(batch)
                self._failed(attempt, len(batch))
                if self._stopping.is_set():
                    return
                delay = self._retry_delay(attempt)
                if self._pause is not None:
                    await self._pause(delay)
                else:
                    await self._wait(self._stopping, delay)

    async def _post(self, ips: list[str]) -> Attempt:
        assert self._session is not None
        try:
            async with self._session.post(
                self._settings.url, json={"hops": ips}, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return Attempt("ok", status)
                detail = (await response.text(errors="replace"))[:RESPONSE_LOGGED]
                retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
                if status == 429:
                    return Attempt("rate_limited", status, detail, retry_after)
                if 400 <= status < 500:
                    return Attempt("refused", status, detail)
                outcome = "server_error" if status >= 500 else "unexpected_status"
                return Attempt(outcome, status, detail, retry_after)
        except TimeoutError:
            return Attempt("timeout", detail=f"no reply within {self._settings.timeout_s}s")
        except aiohttp.ClientError as exc:
            return Attempt("connection_error", detail=f"{type(exc).__name__}: {exc}")

    async def _settle(
        self,
        remove: Callable[[Sequence[WaitingHop]], Awaitable[int]],
        batch: list[WaitingHop],
    ) -> int:
        """Take `batch` out of the outbox (`remove`); returns how many were still in it."""
        removed = await remove(batch)
        self._claimed = []
        with self._counts.lock:
            self._counts.depth -= removed
        return removed

    async def _dead_letter(self, batch: list[WaitingHop], attempt: Attempt) -> None:
        log.error(
            "input service refused hops; parked in dead_letters",
            status=attempt.status,
            response=attempt.detail,
            hops=len(batch),
            url=self._settings.url,
        )
        removed = await self._settle(
            lambda b: self._outbox.dead_letter(b, attempt.status, attempt.detail), batch
        )
        with self._counts.lock:
            self._counts.dead_lettered += removed
        self._metrics.hops_dead_lettered.inc(removed)

    def _failed(self, attempt: Attempt, waiting: int) -> None:
        self._failures += 1
        if self._down_since is None:
            self._down_since = self._clock()
        self._failure_log.warning(
            "sending hops to the input service failed; will retry",
            outcome=attempt.outcome,
            status=attempt.status or None,
            detail=attempt.detail,
            failures=self._failures,
            hops=waiting,
            url=self._settings.url,
        )

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        log.info(
            "input service is back",
            failed_attempts=self._failures,
            down_s=round(self._clock() - self._down_since, 3),
            url=self._settings.url,
        )
        self._failures, self._down_since = 0, None
        self._failure_log.reset()

    def _retry_delay(self, attempt: Attempt) -> float:
        """`Retry-After` when given, else full jitter: uniform(0, min(max, base * 2^n))."""
        if attempt.retry_after is not None:
            return attempt.retry_after
        s = self._settings
        top = min(s.backoff_max_s, s.backoff_base_s * 2 ** min(self._failures - 1, 60))
        return self._jitter(top)

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Wait `seconds`, or less if `event` (or shutdown) fires first."""
        if event.is_set() or self._stopping.is_set():
            return
        waiters = {
            asyncio.ensure_future(event.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), at most an hour."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, moment - now), RETRY_AFTER_MAX_S)
