"""Reader clients of `bench.pg_query_bench`, in a process of their own at nice 19.

On the shared 2-core machine the bench's reader clients ran in the bench's own
process, at the same priority as the service, the database and the posting
clients: 20 clients looping on `/health` (nothing read at all) took a third of
ingest away (BENCHMARKS.md, "Query API on PostgreSQL, round two"), so the
figure "ingest kept while reads loop" measured the clients as much as the
reads. Here the readers get only the CPU the rest leaves, and what is left to
see is what serving the reads costs ingest. Prints one JSON line: the reply
statuses and how many replies came back.

    python -m bench.pg_readers --clients 20 --seconds 12 URL [URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from bench.query_readers import read_loop


async def run(urls: list[str], clients: int, seconds: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(read_loop(urls, lambda: time.monotonic() < until, counts) for _ in range(clients))
    )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--nice", type=int, default=19)
    args = parser.parse_args()
    os.nice(args.nice)
    print(json.dumps(asyncio.run(run(args.urls, args.clients, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
