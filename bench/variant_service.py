"""The service with one thing changed, to measure an idea before adopting it.

    python -m bench.variant_service VARIANT --port 0 ...   (then the service's flags)

Variants: `uvloop` (the event loop), `executemany` (the writer inserts with
executemany instead of one json_each statement per table), `switch1ms`
(`sys.setswitchinterval(0.001)`: the GIL changes hands more often).
"""

import asyncio
import sys

from output_service.cli import main
from output_service.storage import results_file


def apply(variant: str) -> None:
    if variant == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif variant == "executemany":
        results_file.JSON_INSERT = False
    elif variant == "switch1ms":
        sys.setswitchinterval(0.001)
    else:
        raise SystemExit(f"unknown variant {variant!r}")


if __name__ == "__main__":
    apply(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
