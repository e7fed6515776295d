"""The floor: the least a Redis job loop can do, with no framework.

C greenlets each loop on BRPOP, json.loads and the call (whose last act is the INCR): two round trips per
job, no acknowledgement, no recovery. It shows how far a framework's own cost is from the Redis round trip.
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import json
import sys

from benchmarks import common

MULTI_PROCESS = False


def enqueue(workload: str, n: int) -> None:
    client = common.redis_client()
    body = json.dumps({"workload": workload})
    for start in range(0, n, 1000):
        client.lpush(common.QUEUE, *([body] * min(1000, n - start)))


def command(concurrency: int, processes: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.sys_floor", str(concurrency)]


def main(concurrency: int) -> None:
    import gevent

    client = common.redis_client()

    def loop() -> None:
        while True:
            item = client.brpop(common.QUEUE, timeout=1)
            if item is not None:
                common.run(json.loads(item[1])["workload"])

    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)])


if __name__ == "__main__":
    main(int(sys.argv[1]))
