"""What results and batches cost: `python -m benchmarks.bench_results [--quick] [--jobs N] [--rounds R] [--waits N]`.

On a private redis-server (never the one on 6379), four cases of the same noop job: plain, `result_ttl=60`, every
job in one big batch (`with Batch(): ...`, no callbacks), and both. For each case: push N jobs from this process
(one `enqueue()` call each; inside the batch's block they are collected and written by its end, in one script
call), timed and counted; park the queue (RENAME), start one worker subprocess (`-c 10`, loading this module),
wait until it is idle, put the queue back, and time until the queue and the worker's working list are both empty
(every job settled). Measured over that window: jobs/s, the worker's CPU (its process tree, /proc), Redis'
own CPU (INFO cpu) and Redis commands (INFO commandstats deltas: the commands Lua scripts run are counted too;
this process's polls and INFO calls are subtracted). The cases run in turn, `--rounds` times (A B C D, A B C D,
...), and the tables give each figure's median. Some enqueue-only references follow (enqueue_bulk, a batch of
one job per block).

Then result() latency: one worker (`-c 10`) runs jobs whose last statement is `return time.time()`; a waiter
process enqueues one, calls `api.Job(jid).result()` and takes time.time() when it returns, one job after the
other. The waiter is a plain process, then one patched by gevent (jiggler_gevent.patch), in turns.

The header gives what one Redis round trip (a PING from a plain process) costs on the machine, to read the rest
by. Prints Markdown tables and writes them to benchmarks/results/results.md (the raw figures to results.json).
"""

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jiggler_gevent import Batch, job

NAMESPACE = "bench"
QUEUE = "bench"


@job(queue=QUEUE, retries=0, name="benchmarks.bench_results.noop")  # named: this file also runs as __main__
def noop() -> None:
    """Does nothing."""


@job(queue=QUEUE, retries=0, result_ttl=60, name="benchmarks.bench_results.stamp")
def stamp() -> float:
    """Returns when it ended: its last statement."""
    return time.time()


TRACKED = noop.set(result_ttl=60)
CASES = {  # label -> (result_ttl, in a batch)
    "plain": (False, False),
    "result_ttl=60": (True, False),
    "in one batch": (False, True),
    "result_ttl=60, in one batch": (True, True),
}


def waiter(url: str, count: int, warmup: int = 10) -> None:
    """Run in a waiter process: enqueue `stamp` and wait for its result, `count` times, one after the other; prints
    one line per job: seconds from the job's end to result() returning, and from before enqueue to that return."""
    from jiggler_gevent import api, config

    config.configure(redis_url=url, namespace=NAMESPACE)
    lines = []
    for i in range(warmup + count):
        started = time.perf_counter()
        jid = stamp.enqueue()
        assert jid is not None
        ended = api.Job(jid).result(timeout=30)
        now, finished = time.time(), time.perf_counter()
        if i >= warmup:
            lines.append(f"{now - ended:.9f} {finished - started:.9f}")
    print("\n".join(lines), flush=True)


ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005  # seconds between the checks for the end of a drain
WAITER = "import sys; {patch}from benchmarks import bench_results as b; b.waiter(sys.argv[1], int(sys.argv[2]))"


# --- measuring ----------------------------------------------------------------------------------------


def commands(client: Any) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_cpu(client: Any) -> float:
    """CPU seconds the redis-server has used so far (its INFO call included, a few µs)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process `pid` and its descendants."""
    from benchmarks import procs

    sampler = procs.TreeSampler(pid)
    sampler.sample()
    return sum(sampler.cpu.values())


def delta(before: dict[str, int], after: dict[str, int], own: dict[str, int]) -> dict[str, int]:
    """Calls per command between two readings, less `own` (this process's calls in between) and every INFO (all
    of them this process's), zeros dropped."""
    names = set(before) | set(after)
    diff = {n: after.get(n, 0) - before.get(n, 0) - own.get(n, 0) for n in names}
    diff.pop("info", None)
    return {n: c for n, c in sorted(diff.items()) if c}


def push(case: str, n: int) -> None:
    """Enqueue `n` jobs of `case`, one enqueue() call each."""
    tracked, batched = CASES[case]
    fn = TRACKED if tracked else noop
    if batched:
        with Batch(description="bench"):
            for _ in range(n):
                fn.enqueue()
    else:
        for _ in range(n):
            fn.enqueue()


def _one_job_batches(n: int) -> None:
    for _ in range(n):
        with Batch(description="bench"):
            noop.enqueue()


REFERENCES: dict[str, Callable[[int], object]] = {  # enqueue-only rows: label -> push n jobs
    "plain, enqueue_bulk (one call)": lambda n: noop.enqueue_bulk([()] * n),
    "result_ttl=60, enqueue_bulk (one call)": lambda n: TRACKED.enqueue_bulk([()] * n),
    "a batch of one job per block": _one_job_batches,
}


def timed_push(client: Any, fn: Callable[[], object], n: int) -> dict[str, Any]:
    """Time fn() (which pushes n jobs) and count the Redis commands it caused."""
    before, cpu0 = commands(client), redis_cpu(client)
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    cpu1, after = redis_cpu(client), commands(client)
    calls = delta(before, after, {})
    return {
        "us": 1e6 * elapsed / n,
        "cmds": sum(calls.values()) / n,
        "redis_us": 1e6 * (cpu1 - cpu0) / n,
        "calls": calls,
        "n": n,
    }


def start_worker(url: str, env: dict[str, str], client: Any, keys: Any) -> "tuple[subprocess.Popen[bytes], str]":
    """One worker process (`-c 10` on the bench queue); returns it and its working list once it idles."""
    from benchmarks import procs

    return procs.start_bench_worker("benchmarks.bench_results", url, env, client, keys, QUEUE, NAMESPACE, 10)


def stop_worker(proc: "subprocess.Popen[bytes]") -> None:
    from benchmarks import procs

    procs.stop_bench_worker(proc)


def drain(url: str, env: dict[str, str], client: Any, keys: Any, n: int) -> dict[str, Any]:
    """Start a worker on the parked queue's jobs; jobs/s, CPU and commands from un-parking to all settled."""
    queue, parked = keys.queue(QUEUE), keys.queue("parked")
    proc, working = start_worker(url, env, client, keys)
    try:
        before, cpu0, rcpu0 = commands(client), tree_cpu(proc.pid), redis_cpu(client)
        started = time.perf_counter()
        client.rename(parked, queue)  # wakes the worker's BLMOVE on that key
        polls = 0
        while True:
            time.sleep(POLL)
            with client.pipeline(transaction=False) as pipe:
                pipe.llen(queue)
                pipe.llen(working)
                left = sum(pipe.execute())
            polls += 1
            if not left:
                break
            if proc.poll() is not None or time.perf_counter() - started > 120 + n * 0.01:
                raise RuntimeError(f"the worker stopped or stalled with {left} jobs left")
        elapsed = time.perf_counter() - started
        cpu1, rcpu1, after = tree_cpu(proc.pid), redis_cpu(client), commands(client)
    finally:
        stop_worker(proc)
    assert client.zcard(keys.dead) == 0, "jobs died: is the worker loading this module?"
    calls = delta(before, after, {"rename": 1, "llen": 2 * polls})
    return {
        "rate": n / elapsed,
        "cpu_us": 1e6 * (cpu1 - cpu0) / n,
        "redis_us": 1e6 * (rcpu1 - rcpu0) / n,
        "cmds": sum(calls.values()) / n,
        "calls": calls,
        "n": n,
        "seconds": elapsed,
    }


def run_case(case: str, n: int, url: str, env: dict[str, str], client: Any, keys: Any) -> dict[str, Any]:
    """Push n jobs of `case` (timed), then drain them with a fresh worker."""
    client.flushdb()
    pushed = timed_push(client, lambda: push(case, n), n)
    assert client.llen(keys.queue(QUEUE)) == n
    client.rename(keys.queue(QUEUE), keys.queue("parked"))
    return {"case": case, "enqueue": pushed, "worker": drain(url, env, client, keys, n)}


def latencies(url: str, env: dict[str, str], client: Any, keys: Any, waits: int, rounds: int) -> dict[str, Any]:
    """result() latency, for a plain waiter and a gevent-patched one in turns, `waits` jobs each in all."""
    client.flushdb()
    proc, _ = start_worker(url, env, client, keys)
    found: dict[str, dict[str, list[float]]] = {k: {"end": [], "round": []} for k in ("plain", "gevent")}
    try:
        for r in range(rounds):
            count = waits // rounds + (1 if r < waits % rounds else 0)
            for kind in found:
                patch = "from jiggler_gevent.patch import patch; patch(); " if kind == "gevent" else ""
                argv = [sys.executable, "-c", WAITER.format(patch=patch), url, str(count)]
                out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
                for line in out.splitlines():
                    end, whole = map(float, line.split())
                    found[kind]["end"].append(end)
                    found[kind]["round"].append(whole)
    finally:
        stop_worker(proc)
    return found


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the tables ---------------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], part: str, key: str) -> float:
    return float(statistics.median(r[part][key] for r in runs))


def spread(runs: list[dict[str, Any]], part: str, key: str, fmt: str) -> str:
    values = [r[part][key] for r in runs]
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}" if len(values) > 1 else "-"


def small(x: float) -> str:
    """A count per job: two decimals, or four for one below 0.01 (a command per call of a bulk push)."""
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.4f}"


def tables(results: list[dict[str, Any]], refs: dict[str, list[dict[str, Any]]], lat: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    by_case = {c: [r for r in results if r["case"] == c] for c in CASES}
    n = results[0]["worker"]["n"]
    out = [
        f"| worker, `-c 10`, {n:,} noop jobs | jobs/s (median) | min-max | worker CPU µs/job | Redis CPU µs/job "
        "| Redis commands/job | of which EVALSHA |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, runs in by_case.items():
        evalsha = statistics.median(r["worker"]["calls"].get("evalsha", 0) / n for r in runs)
        out.append(
            f"| {case} | {med(runs, 'worker', 'rate'):,.0f} | {spread(runs, 'worker', 'rate', ',.0f')} "
            f"| {med(runs, 'worker', 'cpu_us'):.0f} | {med(runs, 'worker', 'redis_us'):.0f} "
            f"| {med(runs, 'worker', 'cmds'):.2f} | {evalsha:.2f} |"
        )
    out += [
        "",
        f"| enqueue, {n:,} jobs from one process | µs/job (median) | min-max | Redis CPU µs/job | Redis commands/job |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = [(f"{c}: `enqueue()`" + (" in the block" if CASES[c][1] else ""), runs) for c, runs in by_case.items()]
    for label, runs in rows + list(refs.items()):
        out.append(
            f"| {label} | {med(runs, 'enqueue', 'us'):.1f} | {spread(runs, 'enqueue', 'us', '.1f')} "
            f"| {med(runs, 'enqueue', 'redis_us'):.1f} | {small(med(runs, 'enqueue', 'cmds'))} |"
        )
    out += ["", "| Redis commands per job, by command (last round) | " + " | ".join(CASES) + " |"]
    out.append("|---|" + "---:|" * len(CASES))
    last = {c: runs[-1] for c, runs in by_case.items()}
    for part in ("worker", "enqueue"):
        names = sorted({name for r in last.values() for name in r[part]["calls"]})
        for name in names:
            per_job = [r[part]["calls"].get(name, 0) / r[part]["n"] for r in last.values()]
            if max(per_job) >= 0.005:  # connection setup and the like left out
                out.append(f"| {part}: {name} | " + " | ".join(f"{x:.2f}" for x in per_job) + " |")
    if lat:
        count = len(lat["plain"]["end"])
        out += [
            "",
            f"| result() latency, {count} sequential jobs, worker `-c 10` | job's end to result() returned: p50 ms "
            "| p99 ms | max ms | enqueue to result() returned: p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind, label in (("plain", "waiter outside gevent"), ("gevent", "waiter in a gevent-patched process")):
            end, whole = lat[kind]["end"], lat[kind]["round"]
            out.append(
                f"| {label} | {1e3 * percentile(end, 0.5):.2f} | {1e3 * percentile(end, 0.99):.2f} "
                f"| {1e3 * max(end):.2f} | {1e3 * percentile(whole, 0.5):.2f} | {1e3 * percentile(whole, 0.99):.2f} |"
            )
    return "\n".join(out)


def round_trip(client: Any, n: int = 2000) -> tuple[float, float]:
    """A Redis round trip (PING) from this process: the median µs, and the mean µs of this process's CPU."""
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        started = time.perf_counter()
        client.ping()
        walls.append(time.perf_counter() - started)
    return 1e6 * statistics.median(walls), 1e6 * (time.process_time() - cpu0) / n


def header(args: argparse.Namespace, client: Any) -> str:
    """Date, machine and settings, and what one Redis round trip costs here (to read the figures by)."""
    from importlib import metadata

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = "; ".join(f"{p} {metadata.version(p)}" for p in ("gevent", "redis"))
    try:
        metadata.version("hiredis")
        versions += " with hiredis"
    except metadata.PackageNotFoundError:
        versions += " without hiredis"
    wall, cpu = round_trip(client)
    return (
        f"`python -m benchmarks.bench_results{' --quick' if args.quick else ''} --jobs {args.jobs} "
        f"--rounds {args.rounds} --waits {args.waits}`, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}: "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at start {load}; {versions}. "
        f"A Redis round trip (PING, plain process): {wall:.0f} µs, {cpu:.0f} µs of the client's CPU.\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the cases and the latency rows; print and write the tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_results", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 round, 100 waits")
    parser.add_argument("--jobs", type=int, help="jobs per case (default 20,000)")
    parser.add_argument("--rounds", type=int, help="rounds of the four cases, alternated (default 3)")
    parser.add_argument("--waits", type=int, help="result() waits per waiter kind (default 400)")
    parser.add_argument("--no-latency", action="store_true", help="skip the result() latency rows")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (2_000 if args.quick else 20_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.waits = args.waits or (100 if args.quick else 400)
    import redis

    from benchmarks import run
    from jiggler_gevent import config
    from jiggler_gevent.demo.local_redis import start_private

    run.compile_sources()  # no worker compiles this checkout at its start
    url, stop = start_private()
    try:
        env = run.bench_env(url)
        config.configure(redis_url=url, namespace=NAMESPACE)
        client = redis.Redis.from_url(url, decode_responses=True)
        keys = config.current().keys
        top = header(args, client)
        for case in CASES:  # warm: scripts loaded, connection open
            push(case, 1)
        for fn in REFERENCES.values():
            fn(1)
        results: list[dict[str, Any]] = []
        refs: dict[str, list[dict[str, Any]]] = {label: [] for label in REFERENCES}
        for r in range(args.rounds):
            for case in CASES:
                res = run_case(case, args.jobs, url, env, client, keys)
                results.append(res)
                w, e = res["worker"], res["enqueue"]
                print(
                    f"round {r + 1} {case:28} {w['rate']:8,.0f} jobs/s  {w['cpu_us']:5.0f} µs CPU/job  "
                    f"{w['cmds']:5.2f} cmds/job | enqueue {e['us']:6.1f} µs  {e['cmds']:5.2f} cmds",
                    file=sys.stderr,
                    flush=True,
                )
            for label, fn in REFERENCES.items():
                client.flushdb()
                pushed = timed_push(client, lambda fn=fn: fn(args.jobs), args.jobs)  # type: ignore[misc]
                refs[label].append({"enqueue": pushed})
                print(f"round {r + 1} {label:38} enqueue {pushed['us']:6.1f} µs", file=sys.stderr, flush=True)
        lat = {} if args.no_latency else latencies(url, env, client, keys, args.waits, args.rounds)
    finally:
        stop()
    text = top + "\n" + tables(results, refs, lat)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"cases": results, "references": refs, "latency": lat}, indent=1))


if __name__ == "__main__":
    main()
