"""What queue control costs: the fetch script with and without a paused queue or priorities, and an enqueue with each
option.

    python -m benchmarks.bench_queue_control [--fetches 20000] [--batch 10] [--enqueues 5000] [--rounds 6]

On a private server, one ReliableFetch on three queues takes `--batch` payloads per call from a full queue, acking
the previous batch in the same call as the worker does. Six states, in alternating rounds (the order rotated each
round): nothing paused (the plain path: one SCARD, one EXISTS), another queue paused (the script then checks each of
the three queues it is asked for), the queue being drained paused (the fetch takes nothing: what an idle worker on a
paused queue pays per look), priorities in use on the namespace but the jobs drained all of priority 0 (each queue
asked then costs two ZRANGEBYSCOREs and an EXISTS), every job drained of priority 5 (taken from the queue's sorted set).
Prints per state the median microseconds per call and Redis commands per call (INFO commandstats, those run inside
the script included). Then, in the same way, one enqueue: plain, with `expires_in` (the fetch script is unchanged by
it: its cost is a field in the payload and one dictionary lookup as the worker starts the job), with `debounce`
(each enqueue after the first replaces the waiting job), with `priority` (through push_each.lua, into the
queue's sorted set) and with a group. A sixth fetch state takes jobs spread over 1,000 groups (round-robin, one
rotation step per job). Last, `--drain-jobs` no-op jobs drained by one worker (-c 10), plain or in 1,000 groups, in
alternating rounds: jobs/s from its first take until all are done.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from jiggler_gevent import config, job
from jiggler_gevent.admin import api
from jiggler_gevent.demo.local_redis import start_private
from jiggler_gevent.server.fetch import ReliableFetch

ROOT = Path(__file__).resolve().parent.parent
QUEUES = [("default", 1), ("low", 1), ("mail", 1)]
PRIO_IN_USE, PRIO_JOBS = "priorities in use, jobs of priority 0", "every job of priority 5"
GROUPED = "every job in one of 1,000 groups"
STATES = ("nothing paused", "another queue paused", "this queue paused", PRIO_IN_USE, PRIO_JOBS, GROUPED)


@job
def noop() -> None:
    """Does nothing (only enqueued here)."""


ENQUEUES = {
    "plain enqueue": noop.set(),
    "enqueue with expires_in": noop.set(expires_in=60),
    "enqueue with debounce (replacing)": noop.set(debounce=60),
    "enqueue with priority": noop.set(priority=5),
    "enqueue with a group": noop.set(group="tenant-42"),
}


def _commands(client) -> int:  # type: ignore[no-untyped-def]
    """Every command Redis has run so far, those inside scripts included."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def _set_state(state: str) -> None:
    keys = config.current().keys
    if state in (PRIO_IN_USE, PRIO_JOBS, GROUPED):
        config.redis_client(config.current().url).set(keys.seq, 1)
    else:
        config.redis_client(config.current().url).delete(keys.seq)
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
    client.delete(keys.queue("default"), keys.prio("default"), keys.groups("default"), fetch.working)
    client.delete(*(keys.group("default", f"g{g}") for g in range(1000)))
    if state == GROUPED:
        for g in range(1000):
            noop.set(group=f"g{g}").enqueue_bulk([()] * -(-fetches * batch // 1000))
    elif state == PRIO_JOBS:
        scored = {f'{{"n": {i}, "priority": 5}}': i - 5 * 2**40 for i in range(fetches * batch)}
        client.zadd(keys.prio("default"), scored)
    else:
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


def measure_enqueue(kind: str, client, enqueues: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(microseconds per enqueue, Redis commands per enqueue) over `enqueues` calls of the `kind` in ENQUEUES."""
    call = ENQUEUES[kind]
    commands0 = _commands(client)
    started = time.perf_counter()
    for _ in range(enqueues):
        call.enqueue()
    elapsed = time.perf_counter() - started
    return elapsed / enqueues * 1e6, (_commands(client) - commands0 - 1) / enqueues


def drain(url: str, jobs: int, groups: int) -> float:
    """Jobs per second of one worker (-c 10) draining `jobs` no-op jobs queued plain (`groups` 0) or spread over
    `groups` groups of one queue: from its first take until the queue, its groups and every working list are
    empty."""
    client = config.redis_client(url)
    client.flushdb()
    if groups:
        for g in range(groups):
            noop.set(group=f"g{g}").enqueue_bulk([()] * (jobs // groups))
    else:
        for start in range(0, jobs, 1000):
            noop.enqueue_bulk([()] * min(1000, jobs - start))
    keys = config.current().keys
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_queue_control", "-c", "10"]
    argv += ["--redis-url", url, "--namespace", keys.namespace, "--job-log", "off"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    working = f"{keys.namespace}:working:*"
    try:
        while not any(client.llen(k) for k in client.scan_iter(working)):
            time.sleep(0.001)
        started = time.perf_counter()
        while client.exists(keys.queue("default"), keys.groups("default")) or any(
            client.llen(k) for k in client.scan_iter(working)
        ):
            time.sleep(0.005)
        return jobs / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(30)


def _table(title: str, samples: dict[str, list[tuple[float, float]]], what: str) -> None:
    print(f"\n| {title} | us per {what} | Redis commands per {what} |\n|---|---:|---:|")
    for state, rows in samples.items():
        us, commands = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"| {state} | {us:.1f} | {commands:.1f} |")


def main() -> None:
    """Alternate the states, print the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetches", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--enqueues", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--drain-jobs", type=int, default=100_000)
    parser.add_argument("--drain-rounds", type=int, default=3)
    opts = parser.parse_args()
    url, stop = start_private()
    try:
        config.configure(redis_url=url, namespace="bench-qc")
        client = config.redis_client(url)
        fetch = ReliableFetch(client, config.current().keys, "bench-qc", QUEUES, strict=True)
        samples: dict[str, list[tuple[float, float]]] = {s: [] for s in STATES}
        for i in range(opts.rounds):
            for state in STATES[i % len(STATES) :] + STATES[: i % len(STATES)]:
                samples[state].append(measure(fetch, client, opts.fetches, opts.batch, state))
                print(f"round {i + 1}, {state}: {samples[state][-1][0]:.1f} us per fetch", flush=True)
        _set_state("nothing paused")
        kinds = list(ENQUEUES)
        pushes: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for i in range(opts.rounds):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                pushes[kind].append(measure_enqueue(kind, client, opts.enqueues))
                print(f"round {i + 1}, {kind}: {pushes[kind][-1][0]:.1f} us per enqueue", flush=True)
        drains: dict[int, list[float]] = {0: [], 1000: []}
        for i in range(opts.drain_rounds):
            for groups in (0, 1000) if i % 2 == 0 else (1000, 0):
                drains[groups].append(drain(url, opts.drain_jobs, groups))
                print(f"round {i + 1}, drain in {groups} groups: {drains[groups][-1]:,.0f} jobs/s", flush=True)
    finally:
        stop()
    _table(f"fetch of {opts.batch} (medians of {opts.rounds} rounds)", samples, "call")
    _table(f"one enqueue (medians of {opts.rounds} rounds)", pushes, "enqueue")
    print(
        f"\n| {opts.drain_jobs:,} no-op jobs, one worker -c 10 | jobs/s (median of {opts.drain_rounds}) |\n|---|---:|"
    )
    for groups, rates in drains.items():
        print(f"| {'plain' if not groups else f'in {groups:,} groups'} | {statistics.median(rates):,.0f} |")


if __name__ == "__main__":
    main()
