"""The service with one thing changed, to measure an idea before adopting it.

    python -m bench.variant_service VARIANT --port 0 ...   (then the service's flags)

Variants: `uvloop` (the event loop), `executemany` (the writer inserts with
executemany instead of multi-row VALUES statements), `json-each` (one json_each
statement per table, the inserts before issue 15's second round), `switch1ms`
(`sys.setswitchinterval(0.001)`: the GIL changes hands more often),
`per-request-ids` (the middleware as before issue 15: a uuid4 per request id and
`labels()` looked up per request), `sequential-hops` (the hop hook on the writer
thread ahead of the group's inserts, as before it overlapped them), and pieces
of the one-result path taken away to see what each costs: `no-store`,
`no-request-log`, `trivial-handler`, `no-middleware` (combined with `+`);
`memprobe` is the service unchanged with bench.memory_probe sampling its memory.
"""

import asyncio
import gc
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from output_service.cli import main
from output_service.storage.sqlite import results_file


def apply(variant: str) -> None:
    if variant == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif variant == "executemany":
        _executemany_inserts()
    elif variant == "json-each":
        _json_each_inserts()
    elif variant == "per-request-ids":
        import uuid

        from output_service.handlers import middleware
        from output_service.metrics import Metrics

        def count_request(self: Metrics, route: str, status: int) -> None:
            self.http_requests.labels(route=route, status=str(status)).inc()

        middleware._new_request_id = lambda: uuid.uuid4().hex[:16]
        Metrics.count_request = count_request  # type: ignore[method-assign]
    elif "+" in variant:
        for part in variant.split("+"):
            apply(part)
    elif variant in SPLIT:
        SPLIT[variant]()
    elif variant == "sequential-hops":
        _sequential_hop_hook()
    elif variant == "switch1ms":
        sys.setswitchinterval(0.001)
    elif variant == "tailprobe":  # gc pauses and group times, from inside
        from bench import tail_probe

        tail_probe.start()
    elif variant == "reuseport":  # bench.reuseport: several processes on one port
        _reuse_port()
    elif variant == "bg-checkpoint":  # the live file's checkpoints off the writer's COMMIT
        _background_checkpoints()
    elif variant == "no-read-upkeep":  # no summaries warmed, no side files built (soak)
        from output_service.storage.sqlite.reads.upkeep import ReadUpkeep

        ReadUpkeep.start = lambda self: None  # type: ignore[method-assign]
    elif variant == "no-gc-settle":  # the collector as before round three: no freeze, gen0 700
        from output_service import gc_settle

        gc_settle.settle = lambda: None
    elif variant.startswith("gcfreeze"):  # gcfreeze, or gcfreeze50000: also gen0's threshold
        _gc_after_startup(int(variant.removeprefix("gcfreeze") or 0))
    elif variant.startswith("gen0-"):  # gen0-50000: only the threshold
        gc.set_threshold(int(variant.removeprefix("gen0-")), *gc.get_threshold()[1:])
    elif variant == "cprofile":  # the event loop thread under cProfile, stats to $BENCH_CPROFILE
        _cprofile()
    elif variant == "memprobe":  # the service as it is, its memory sampled from inside
        from bench import memory_probe

        memory_probe.start()
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def _cprofile() -> None:
    """cProfile on the main thread (the event loop) from start to exit, its stats
    written to $BENCH_CPROFILE: exact call counts per request, to compare with
    bench.trivial's (the times are cProfile's, inflated; the counts are not)."""
    import atexit
    import cProfile
    import os

    profile = cProfile.Profile()
    profile.enable()

    def dump() -> None:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_CPROFILE"])

    atexit.register(dump)


def _rows(self: Any, values: list[Any]) -> list[list[Any]]:
    """The flat values `_Insert.run` gets, cut back into rows."""
    width = self._width
    return [values[i : i + width] for i in range(0, len(values), width)]


def _executemany_inserts() -> None:
    def run(self: Any, conn: sqlite3.Connection, values: list[Any]) -> None:
        conn.executemany(self._text(1), _rows(self, values))

    results_file._Insert.run = run  # type: ignore[method-assign]


def _json_each_inserts() -> None:
    """The rows as one JSON array per table, unpacked by SQLite (`value->>i`)."""
    encoder = msgspec.json.Encoder()

    def run(self: Any, conn: sqlite3.Connection, values: list[Any]) -> None:
        rows = _rows(self, values)
        if not rows:
            return
        payload = encoder.encode(rows)
        if b"\\u0000" in payload:  # SQLite's JSON ends a text value at an escaped NUL
            conn.executemany(self._text(1), rows)
            return
        picks = ", ".join(f"value->>{i}" for i in range(self._width))
        columns = self._head.split("(", 1)[1].split(")", 1)[0]
        table = self._head.split()[2]
        sql = f"INSERT INTO {table} ({columns}) SELECT {picks} FROM json_each(?)"
        conn.execute(sql, (payload.decode(),))

    results_file._Insert.run = run  # type: ignore[method-assign]


def _sequential_hop_hook() -> None:
    """The hop hook as before: on the writer thread, ahead of the group's inserts."""
    from collections.abc import Sequence

    from output_service.hops import HopFeedback

    def before_commit(self: HopFeedback, items: Sequence[Any]) -> None:
        assert self.recorder is not None
        self.recorder(items)

    HopFeedback.before_commit = before_commit  # type: ignore[assignment,method-assign]


def _background_checkpoints() -> None:
    """A prototype: the writer's automatic checkpoints at 4x the pages (a
    backstop), and a thread of its own running PASSIVE checkpoints of the newest
    results file whenever its WAL passes `wal_autocheckpoint` pages, so the
    writer's COMMIT no longer copies 40 MB of WAL now and then. Bench only: it
    ignores rotation and sealing (bench runs never rotate)."""
    import os
    import threading
    import time
    from pathlib import Path

    from output_service.storage.sqlite import connect
    from output_service.storage.sqlite.file_names import results_files

    db_dir = Path(sys.argv[sys.argv.index("--db-dir") + 1])
    pages = 10_000
    writer = connect.writer

    def backstop(path: Any, **options: Any) -> sqlite3.Connection:
        return writer(path, **{**options, "wal_autocheckpoint": pages * 4})

    connect.writer = backstop

    def loop() -> None:
        conn = None
        while True:
            time.sleep(0.05)
            files = results_files(db_dir) if db_dir.exists() else []
            if not files:
                continue
            wal = files[-1].with_name(files[-1].name + "-wal")
            try:
                size = os.stat(wal).st_size
            except FileNotFoundError:
                continue
            if size < pages * 4096:
                continue
            if conn is None:
                conn = sqlite3.connect(files[-1], isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    threading.Thread(target=loop, name="checkpointer", daemon=True).start()


def _reuse_port() -> None:
    """SO_REUSEPORT on every socket the service makes (its ports), before bind."""
    import socket

    class ReusePort(socket.socket):
        def bind(self, address: Any) -> None:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().bind(address)

    socket.socket = ReusePort  # type: ignore[misc]


def _gc_after_startup(gen0: int) -> None:
    """gc.freeze() once storage has opened (what start-up made is never collected
    again, so a collection no longer walks it), and gen0's threshold if given."""
    import output_service.cli as cli

    create = cli.create_results_app  # type: ignore[attr-defined]

    def create_results_app(services: Any) -> web.Application:
        made = create(services)

        async def freeze(_: web.Application) -> None:
            gc.collect()
            gc.freeze()
            if gen0:
                gc.set_threshold(gen0, *gc.get_threshold()[1:])

        made.on_startup.append(freeze)
        return made

    cli.create_results_app = create_results_app  # type: ignore[attr-defined]


def _no_store() -> None:
    """POST /results answers once the batch is decoded: nothing is queued or written."""
    from output_service.storage.seam import Submission, SubmitResult
    from output_service.storage.sqlite.store import SqliteStore

    async def submit(self: SqliteStore, submission: Submission) -> SubmitResult:
        return SubmitResult(len(submission.batch.results))

    SqliteStore.submit = submit  # type: ignore[method-assign]


def _no_request_log() -> None:
    """No `request` line (other log lines stay)."""
    from output_service.handlers import middleware

    class Quiet:
        def info(self, *args: Any, **kwargs: Any) -> None:
            pass

        debug = exception = info

    middleware.log = Quiet()


def _trivial_handler() -> None:
    """bench.trivial's handler in the service's app (its middlewares, site, runner)."""
    from output_service.handlers import ingest

    async def post_results(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"status":"ok","received":1}', content_type="application/json")

    ingest.post_results = post_results


def _no_middleware() -> None:
    """The app without its middleware (request context, access, summary line)."""
    import output_service.app as app

    @web.middleware
    async def passthrough(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request)  # type: ignore[no-any-return]

    app.front_middleware = lambda config, metrics: passthrough  # type: ignore[attr-defined]


# One-result requests taken apart (combine with +: `no-store+no-request-log`):
# measured with `python -m bench.wrk_cell` style load, CPU per request.
SPLIT: dict[str, Callable[[], None]] = {
    "no-store": _no_store,
    "no-request-log": _no_request_log,
    "trivial-handler": _trivial_handler,
    "no-middleware": _no_middleware,
}


if __name__ == "__main__":
    apply(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
