"""The enqueuer, a process of its own with the system's own client (run by the harness; sidekiq_jobs.rb is Sidekiq's):

    python -m benchmarks.enqueue SYSTEM preload WORKLOAD N             push N jobs before the worker starts
    python -m benchmarks.enqueue SYSTEM single N | bulk N              timed pushes of noop jobs, one call each
                                                                       or the system's bulk API 1,000 a call;
                                                                       prints {"jobs": N, "seconds": S}
    python -m benchmarks.enqueue SYSTEM paced RATE SECONDS QUEUE...    latency probes at a steady rate;
                                                                       prints {"sent", "seconds", "behind_ms"}

Timed pushes start after the imports and one untimed push (which opens the connection); only the loop is timed.
"""

import importlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType

from benchmarks import common


def timed(mod: ModuleType, mode: str, n: int) -> dict[str, float]:
    """Seconds to push `n` noop jobs, one `push` call each (single) or through the bulk API."""
    mod.push("noop")
    started = time.perf_counter()
    if mode == "bulk":
        mod.push_bulk("noop", n)
    else:
        for _ in range(n):
            mod.push("noop")
    return {"jobs": n, "seconds": time.perf_counter() - started}


def warm_up(push_probe: Callable[[str, float], None], queues: Sequence[str], deadline: float = 60.0) -> None:
    """One warm-up probe per queue; returns once the worker has run them all and has had time to go idle."""
    for q in queues:
        push_probe(q, 0.0)
    client = common.redis_client()
    end = time.monotonic() + deadline
    while client.llen(common.WARMUP_KEY) < len(queues) and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(1.0)


def paced(push_probe: Callable[[str, float], None], rate: float, seconds: float, queues: Sequence[str]) -> dict:
    """Probes at `rate` per second for `seconds`, each to a random one of `queues`, against absolute deadlines
    (a push that is late goes at once, and the next ones catch up), each carrying time.time() at its push."""
    warm_up(push_probe, queues)
    rng = random.Random(13)
    targets = [rng.choice(queues) for _ in range(round(rate * seconds))]
    behind = 0.0
    started = time.monotonic()
    for i, queue in enumerate(targets):
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        push_probe(queue, time.time())
    return {"sent": len(targets), "seconds": time.monotonic() - started, "behind_ms": 1000 * behind}


def main(argv: Sequence[str]) -> None:
    """Dispatch one of the commands in the module's docstring."""
    mod = importlib.import_module(f"benchmarks.sys_{argv[0].replace('-', '_')}")
    command, args = argv[1], argv[2:]
    if hasattr(mod, "setup"):
        mod.setup()
    if command == "preload":
        mod.enqueue(args[0], int(args[1]))
    elif command in ("single", "bulk"):
        print(json.dumps(timed(mod, command, int(args[0]))))
    elif command == "paced":
        print(json.dumps(paced(mod.push_probe, float(args[0]), float(args[1]), args[2:])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
