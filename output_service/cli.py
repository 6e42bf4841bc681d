"""Command line: flags -> Config, logging, two ports, signals, a clean exit.

Start-up problems (a bad setting, a port in use, an unwritable db_dir, a
db_dir another instance holds) end the process with one line on stderr naming
the setting, and exit status 2.

The order of start-up is what keeps a failed start harmless: both ports are
bound first (a busy port touches nothing in db_dir), then db_dir's lock is
taken (a second instance on the same directory stops there, having read or
written nothing), and only then is storage opened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from output_service import __version__, gc_settle
from output_service.app import create_health_app, create_results_app, runner_options
from output_service.config import Config, ConfigError, load_config
from output_service.handlers.auth import log_auth_mode
from output_service.logs import configure_logging, effective_settings
from output_service.netlimits import (
    AcceptErrorLog,
    ConnectionGate,
    LimitedTCPSite,
    fd_budget,
    raise_fd_limit,
)
from output_service.sdnotify import Notifier
from output_service.services import Services
from output_service.storage.dir_lock import DirLock, DirLockedError, holder
from output_service.storage.postgres import StoreOpenError
from output_service.storage.sqlite.inventory import StartupFault
from output_service.storage.sqlite.store import OPEN_ERRORS

log = structlog.get_logger("output_service")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `output-service` and `python -m output_service`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ship"]:  # load results files into PostgreSQL
        from output_service.tools import ship

        return ship.main(args[1:])
    if args[:1] == ["merge"]:  # results files from several instances into one
        from output_service.tools import merge

        return merge.main(args[1:])
    if args[:1] and args[0] in ("check", "export", "post"):  # file tools
        from output_service.tools import files

        return files.run(args)
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"output-service: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.verbose)
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"output-service: {exc}", file=sys.stderr)
        return 2
    return 0


async def serve(config: Config) -> None:
    """Run both ports until SIGTERM or SIGINT, then drain and close."""
    results_sock = _bind(config, config.port, "port")
    try:
        health_sock = _bind(config, config.health_port, "health_port")
    except ConfigError:
        results_sock.close()
        raise
    try:
        lock = DirLock.acquire(config.db_dir)
    except DirLockedError as exc:
        results_sock.close()
        health_sock.close()
        raise ConfigError("db_dir", str(exc)) from None
    except OSError as exc:
        results_sock.close()
        health_sock.close()
        raise ConfigError("db_dir", f"cannot lock {config.db_dir}: {exc.strerror}") from None
    try:
        await _run(config, results_sock, health_sock)
    finally:
        lock.release()


async def _run(config: Config, results_sock: socket.socket, health_sock: socket.socket) -> None:
    services = Services.build(config)
    gates = _connection_gates(config, services)
    accept_errors = AcceptErrorLog(services.metrics.accept_errors)
    asyncio.get_running_loop().set_exception_handler(accept_errors)
    results_runner = web.AppRunner(
        create_results_app(services), **runner_options(config, results=True)
    )
    health_runner = web.AppRunner(
        create_health_app(services), **runner_options(config, results=False)
    )
    try:
        await results_runner.setup()
    except OPEN_ERRORS as exc:
        results_sock.close()
        health_sock.close()
        if isinstance(exc, StartupFault):  # already one line saying what to do
            raise ConfigError("db_dir", str(exc)) from None
        raise ConfigError(
            "db_dir", f"cannot open a results file in {config.db_dir}: {exc}"
        ) from None
    except StoreOpenError as exc:
        # the message never holds the password (storage.postgres.connection.describe)
        raise ConfigError("database_url", f"cannot use the database: {exc}") from None
    try:
        await health_runner.setup()
        results_port = await _listen(results_runner, results_sock, gates[0], accept_errors)
        health_port = await _listen(health_runner, health_sock, gates[1], accept_errors)
        stop = _stop_on_signals()  # before "listening": a SIGTERM right after it drains too
        gc_settle.settle()  # start-up's objects out of every later collection
        log.info(
            "listening",
            version=__version__,
            host=config.host,
            results_port=results_port,
            health_port=health_port,
            db_dir=str(config.db_dir),
            current_db_file=services.storage.stats()["current_db_file"],
            hop_loop=services.hops is not None,
            settings=effective_settings(config),
        )
        log_auth_mode(config)
        # systemd (Type=notify): READY=1 now both ports listen, storage is open and
        # the signal handlers are in place (a SIGTERM right after it drains too)
        notifier = Notifier.from_environ(os.environ)
        async with notifier.watching():
            notifier.ready(f"results :{results_port}, health :{health_port}")
            await _until_signalled(stop)
        log.info("shutting down", grace_s=config.shutdown_grace_s)
    finally:
        await health_runner.cleanup()
        await results_runner.cleanup()
    log.info(
        "stopped",
        total_results=services.storage.stats()["total_results"],
        hops_waiting=services.hops.counts.depth if services.hops is not None else 0,
    )


def _connection_gates(config: Config, services: Services) -> tuple[ConnectionGate, ConnectionGate]:
    """Raise the descriptor limit, fit both ports' connection caps under it."""
    before, limit = raise_fd_limit()
    budget = fd_budget(limit, config.max_connections, config.health_max_connections)
    log.info(
        "descriptor limit",
        soft_before=before,
        soft=limit,
        reserved_for_files=budget.reserve,
        max_connections=budget.results,
        health_max_connections=budget.health,
    )
    if (budget.results, budget.health) != (config.max_connections, config.health_max_connections):
        log.warning(
            "connection caps lowered to fit the descriptor limit",
            max_connections=budget.results,
            health_max_connections=budget.health,
            limit=limit,
        )
    counters = (services.metrics.open_connections, services.metrics.refused_connections)
    return (
        ConnectionGate("results", budget.results, budget.results_backlog, *counters),
        ConnectionGate("health", budget.health, budget.health_backlog, *counters),
    )


def _bind(config: Config, port: int, setting: str) -> socket.socket:
    """A listening socket on host:port, before anything in db_dir is touched."""
    host = config.host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        message = f"cannot listen on {host}:{port}: {exc.strerror}"
        pid = holder(config.db_dir)
        if pid is not None:
            message += f" ({config.db_dir} is in use by another output-service, PID {pid})"
        raise ConfigError(setting, message) from None
    return sock


async def _listen(
    runner: web.AppRunner, sock: socket.socket, gate: ConnectionGate, errors: AcceptErrorLog
) -> int:
    """Serve on a socket bound by `_bind`, through the port's connection gate;
    returns its port."""
    host, port = sock.getsockname()[:2]
    await LimitedTCPSite(runner, host, port, gate, errors, sock=sock).start()
    return int(port)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (handlers stay until `_until_signalled` ends)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
