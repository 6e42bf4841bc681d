"""The service with one thing changed, to measure an idea before adopting it.

    python -m bench.variant_service VARIANT --port 0 ...   (then the service's flags)

Variants: `uvloop` (the event loop), `executemany` (the writer inserts with
executemany instead of one json_each statement per table), `switch1ms`
(`sys.setswitchinterval(0.001)`: the GIL changes hands more often),
`per-request-ids` (the middleware as before issue 15: a uuid4 per request id and
`labels()` looked up per request), `parallel-hops` (a prototype, not in the
service: the hop hook runs on a thread of its own while the writer thread writes
the group; the group is answered when both have committed).
"""

import asyncio
import sys

from output_service.cli import main
from output_service.storage.sqlite import results_file


def apply(variant: str) -> None:
    if variant == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif variant == "executemany":
        results_file.JSON_INSERT = False
    elif variant == "per-request-ids":
        import uuid

        from output_service.handlers import middleware
        from output_service.metrics import Metrics

        def count_request(self: Metrics, route: str, status: int) -> None:
            self.http_requests.labels(route=route, status=str(status)).inc()

        middleware._new_request_id = lambda: uuid.uuid4().hex[:16]
        Metrics.count_request = count_request  # type: ignore[method-assign]
    elif variant == "parallel-hops":
        _parallel_hop_hook()
    elif variant == "switch1ms":
        sys.setswitchinterval(0.001)
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def _parallel_hop_hook() -> None:
    """Writer._write with the before_commit hook (state.db, its own file and fsync)
    overlapped with the results transaction instead of ahead of it."""
    from collections.abc import Sequence
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

    from output_service.storage.sqlite import writer

    hook_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer-hops")

    def _write(self: Any, items: Sequence[Any]) -> Any:
        if self.file.restore_if_removed():
            self._restored = True
        hooked = hook_thread.submit(self._before_commit, items) if self._before_commit else None
        try:
            known, since = self._keys_before(items) if self._keys_before else ({}, "")
            outcomes = self.file.write_group(items, known, since)
            if self._keys_after is not None:
                self._keys_after(items, outcomes)
        finally:
            if hooked is not None:
                hooked.result()
        return outcomes

    writer.Writer._write = _write  # type: ignore[method-assign]


if __name__ == "__main__":
    apply(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
