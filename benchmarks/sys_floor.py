"""The floor: the least a Redis job loop can do, with no framework.

C greenlets each loop on BRPOP, json.loads and the call (whose last act is the INCR): two round trips per
job, no acknowledgement, no recovery. It shows how far a framework's own cost is from the Redis round trip.
Jobs are pushed with LPUSH (bulk: 1,000 values per LPUSH); several queues are one BRPOP on their keys in the
order given (Redis serves the first non-empty one).
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import json
import sys
from collections.abc import Sequence

from benchmarks import common

MULTI_PROCESS = False
BULK = "LPUSH of 1,000"


def enqueue(workload: str, n: int) -> None:
    """Push `n` jobs before the worker starts."""
    push_bulk(workload, n)


def push(workload: str) -> None:
    """One job, one LPUSH."""
    common.redis_client().lpush(common.QUEUE, json.dumps({"workload": workload}))


def push_bulk(workload: str, n: int) -> None:
    """`n` jobs, 1,000 values per LPUSH."""
    client, body = common.redis_client(), json.dumps({"workload": workload})
    for start in range(0, n, common.CHUNK):
        client.lpush(common.QUEUE, *([body] * min(common.CHUNK, n - start)))


def push_probe(queue: str, enqueued: float) -> None:
    """One latency probe to `queue`."""
    common.redis_client().lpush(queue, json.dumps({"probe": enqueued}))


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return [sys.executable, "-m", "benchmarks.sys_floor", str(concurrency), *queues]


def main(concurrency: int, queues: Sequence[str]) -> None:
    """The worker: `concurrency` greenlets looping on BRPOP."""
    import gevent

    client = common.redis_client()

    def loop() -> None:
        while True:
            item = client.brpop(list(queues), timeout=1)
            if item is not None:
                body = json.loads(item[1])
                if "probe" in body:
                    common.probe(body["probe"])
                else:
                    common.run(body["workload"])

    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] or [common.QUEUE])
