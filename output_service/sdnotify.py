"""systemd's notify protocol: READY=1, STOPPING=1 and the watchdog, without libsystemd.

With `Type=notify` systemd passes `NOTIFY_SOCKET` (a Unix datagram socket, a
path or `@abstract`) and waits for `READY=1` before it counts the service as
started, so units ordered after it start only once both ports listen. With
`WatchdogSec=` it also passes `WATCHDOG_USEC` and restarts the service when no
`WATCHDOG=1` arrives within that time. The pings are sent by a task on the
event loop, so a loop that is stuck (a blocking call, a busy handler) stops
them and gets restarted, which is the point.

Outside systemd (no `NOTIFY_SOCKET`) every call does nothing. A failed send is
logged once and never stops the service: systemd's own client library treats
notification as best effort too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Mapping

import structlog

log = structlog.get_logger("output_service.sdnotify")


class Notifier:
    """Sends notifications to the socket named by `NOTIFY_SOCKET`, if any."""

    def __init__(self, address: str | None, watchdog_s: float | None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s  # interval of WATCHDOG=1 pings: half the timeout
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is
        meant for that process only: a child that inherited the variables stays quiet)."""
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_interval(environ, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(1.0)
                sock.sendto(message, target)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "draining") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(self) -> None:
        """Ping forever at `watchdog_s`; cancel to stop."""
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """The watchdog pings while inside; STOPPING=1 on exit, as draining starts.

        READY=1 is sent separately (`ready`), once the signal handlers are in
        place: systemd may send SIGTERM as soon as it has READY=1. The watchdog
        stops with STOPPING=1: systemd stops watching then, and TimeoutStopSec
        bounds the drain instead.
        """
        pinger = asyncio.create_task(self.watchdog(), name="sd-watchdog")
        try:
            yield
        finally:
            self.stopping()
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC in seconds (sd_watchdog_enabled's advice), or None."""
    raw_usec = environ.get("WATCHDOG_USEC", "")
    if not raw_usec.isdigit() or int(raw_usec) == 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid and (not raw_pid.isdigit() or int(raw_pid) != pid):
        return None
    return int(raw_usec) / 1_000_000 / 2
