"""A bound on the bytes of batches the results port holds at once.

`queue_max_results` counts results, but what a result costs in memory depends
on its traceroute: a decoded batch of 1,000 results with 10 hops holds ~2.2 MB
(3.4x its 630 KB body), so 64 clients sending such batches took the process to
287 MB (BENCHMARKS.md). This counts each accepted body's bytes from when it has
been read until its reply, through decoding, the write queue and the commit, and
refuses a batch that would take the total past `queue_max_mb` with the same 503
and Retry-After as a full write queue. A body alone is always taken when nothing
else is held, so any body within `max_body_mb` can be stored.
"""

from __future__ import annotations

from aiohttp import web


class InFlight:
    """Bytes of request bodies between read and reply; only the event loop touches it."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = 0

    def fits(self, size: int) -> bool:
        """Would a body of `size` bytes be taken now (asked before reading one)?"""
        return self.held == 0 or self.held + size <= self.limit

    def take(self, size: int) -> bool:
        if not self.fits(size):
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


IN_FLIGHT = web.AppKey("in_flight", InFlight)
