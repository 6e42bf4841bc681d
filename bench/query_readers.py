"""The query benchmark's reader clients, in a process of their own.

In a deployment the clients that read the query API run on other machines;
on the 2-core bench machine they share the cores with the service and the
ingest load generator. Run here, in their own process at `--nice` (19 in
`bench.query_bench`), they take only CPU that nothing else wants, so the
ingest rate measured meanwhile shows what the *service* pays for serving
their reads, not what the bench's own client code costs. The price: when the
cores are saturated they send fewer requests than clients on their own
machines would; the bench reports how many replies they got, so that shows.

Protocol: prints `ready` once every client has had its first reply, then loops
until stdin closes, then prints one JSON line: replies per status and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

import aiohttp


async def read_loop(
    urls: list[str],
    going: Callable[[], bool],
    counts: dict[str, int],
    first: asyncio.Event | None = None,
) -> None:
    """One reader: GET the urls in turn while `going()`, counting replies per
    status; `first` is set at its first reply. Every reader bench loops with this."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        i = 0
        while going():
            async with session.get(urls[i % len(urls)]) as resp:
                await resp.read()
                key = str(resp.status)
                counts[key] = counts.get(key, 0) + 1
            if first is not None:
                first.set()
            i += 1


async def run(urls: list[str], clients: int) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stop, counts = asyncio.Event(), dict[str, int]()
    firsts = [asyncio.Event() for _ in range(clients)]
    started = time.monotonic()
    tasks = [
        asyncio.create_task(read_loop(urls, lambda: not stop.is_set(), counts, f)) for f in firsts
    ]
    await asyncio.gather(*(f.wait() for f in firsts))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the driver closes our stdin
    stop.set()
    await asyncio.gather(*tasks)
    return {"statuses": counts, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description="looping query API readers")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--nice", type=int, default=19, help="added to this process's nice value")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)
    print(json.dumps(asyncio.run(run(args.urls, args.clients))), flush=True)


if __name__ == "__main__":
    main()
