"""What queue control costs on the fetch path: the fetch script timed with and without a paused queue.

    python -m benchmarks.bench_queue_control [--fetches 20000] [--batch 10] [--rounds 6]

On a private server, one ReliableFetch on three queues takes `--batch` payloads per call from a full queue, acking
the previous batch in the same call as the worker does. Three states, in alternating rounds (the order rotated each
round): nothing paused (the plain path: one SCARD), another queue paused (the script then checks each of the three
queues it is asked for), and the queue being drained paused (the fetch takes nothing: what an idle worker on a
paused queue pays per look). Prints per state the median microseconds per call and Redis commands per call
(INFO commandstats, those run inside the script included).
"""

import argparse
import statistics
import time

from jiggler_gevent import config
from jiggler_gevent.admin import api
from jiggler_gevent.demo.local_redis import start_private
from jiggler_gevent.server.fetch import ReliableFetch

QUEUES = [("default", 1), ("low", 1), ("mail", 1)]
STATES = ("nothing paused", "another queue paused", "this queue paused")


def _commands(client) -> int:  # type: ignore[no-untyped-def]
    """Every command Redis has run so far, those inside scripts included."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def _set_state(state: str) -> None:
    for name, _ in QUEUES:
        api.Queue(name).resume()
    if state == "another queue paused":
        api.Queue("other").pause()
    elif state == "this queue paused":
        api.Queue("other").resume()
        for name, _ in QUEUES:
            api.Queue(name).pause()
    else:
        api.Queue("other").resume()


def measure(fetch: ReliableFetch, client, fetches: int, batch: int, state: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(microseconds per fetch, Redis commands per fetch) over `fetches` calls in `state`."""
    keys = config.current().keys
    client.delete(keys.queue("default"), fetch.working)
    client.lpush(keys.queue("default"), *(f'{{"n": {i}}}' for i in range(fetches * batch)))
    _set_state(state)
    acks: list[bytes] = []
    commands0 = _commands(client)
    started = time.perf_counter()
    for _ in range(fetches):
        acks = [raw.encode() for raw in fetch.take(batch, acks)]
    elapsed = time.perf_counter() - started
    commands = _commands(client) - commands0 - 1  # less the INFO that read the count
    return elapsed / fetches * 1e6, commands / fetches


def main() -> None:
    """Alternate the states, print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetches", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    opts = parser.parse_args()
    url, stop = start_private()
    try:
        config.configure(redis_url=url, namespace="bench-qc")
        client = config.redis_client(url)
        fetch = ReliableFetch(client, config.current().keys, "bench-qc", QUEUES, strict=True)
        samples: dict[str, list[tuple[float, float]]] = {s: [] for s in STATES}
        for i in range(opts.rounds):
            for state in STATES[i % 3 :] + STATES[: i % 3]:
                samples[state].append(measure(fetch, client, opts.fetches, opts.batch, state))
                print(f"round {i + 1}, {state}: {samples[state][-1][0]:.1f} us per fetch", flush=True)
    finally:
        stop()
    print(f"\n| fetch of {opts.batch} (medians of {opts.rounds} rounds) | us per call | Redis commands per call |")
    print("|---|---:|---:|")
    for state in STATES:
        us, commands = (statistics.median(col) for col in zip(*samples[state], strict=True))
        print(f"| {state} | {us:.1f} | {commands:.1f} |")


if __name__ == "__main__":
    main()
