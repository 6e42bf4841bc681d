"""Command line: flags -> Config, logging, two ports, signals, a clean exit.

Start-up problems (a bad setting, a port in use, an unwritable db_dir) end the
process with one line on stderr naming the setting, and exit status 2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence

import structlog
from aiohttp import web

from output_service import __version__
from output_service.app import create_health_app, create_results_app, runner_options
from output_service.config import Config, ConfigError, load_config
from output_service.handlers.auth import log_auth_mode
from output_service.logs import configure_logging, effective_settings
from output_service.sdnotify import Notifier
from output_service.services import Services
from output_service.storage import OPEN_ERRORS
from output_service.storage.postgres import StoreOpenError

log = structlog.get_logger("output_service")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `output-service` and `python -m output_service`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ship"]:  # load results files into PostgreSQL
        from output_service.tools import ship

        return ship.main(args[1:])
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
    services = Services.build(config)
    results_runner = web.AppRunner(
        create_results_app(services), **runner_options(config, results=True)
    )
    health_runner = web.AppRunner(
        create_health_app(services), **runner_options(config, results=False)
    )
    try:
        await results_runner.setup()
    except OPEN_ERRORS as exc:
        raise ConfigError(
            "db_dir", f"cannot open a results file in {config.db_dir}: {exc}"
        ) from None
    except StoreOpenError as exc:
        # the message never holds the password (storage.postgres.connection.describe)
        raise ConfigError("database_url", f"cannot use the database: {exc}") from None
    try:
        await health_runner.setup()
        results_port = await _listen(results_runner, config.host, config.port, "port")
        health_port = await _listen(health_runner, config.host, config.health_port, "health_port")
        log.info(
            "listening",
            version=__version__,
            host=config.host,
            results_port=results_port,
            health_port=health_port,
            db_dir=str(config.db_dir),
            current_db_file=services.storage.current_file.name,
            hop_loop=services.hops is not None,
            settings=effective_settings(config),
        )
        log_auth_mode(config)
        # systemd (Type=notify): READY=1 now both ports listen and storage is open
        notifier = Notifier.from_environ(os.environ)
        async with notifier.watching():
            status = f"results :{results_port}, health :{health_port}"
            await _until_signalled(lambda: notifier.ready(status))
        log.info("shutting down", grace_s=config.shutdown_grace_s)
    finally:
        await health_runner.cleanup()
        await results_runner.cleanup()
    log.info(
        "stopped",
        total_results=services.storage.total_results,
        hops_waiting=services.hops.counts.depth if services.hops is not None else 0,
    )


async def _listen(runner: web.AppRunner, host: str, port: int, setting: str) -> int:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return int(runner.addresses[0][1])


async def _until_signalled(then: Callable[[], object] = lambda: None) -> None:
    """Wait for SIGTERM or SIGINT; `then` runs once the handlers are in place."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    then()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
