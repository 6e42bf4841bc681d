"""Serve a bench server's aiohttp app on a loopback port until SIGTERM.

The bench runner reads the port from the one JSON line this prints, so every
stand-in server (naive, trivial) announces itself the same way.
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiohttp import web


async def serve_until_sigterm(app: web.Application) -> None:
    """Listen on 127.0.0.1 (a free port), print it, and return after SIGTERM."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"event": "listening", "results_port": port}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
