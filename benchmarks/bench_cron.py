"""What the periodic scheduler costs at idle: `python -m benchmarks.bench_cron [--seconds 30] [--entries 1000]`.

Starts a private redis-server on a free port (never the one on 6379), then, for 0 and for N periodic entries,
4 `gjiggler worker` processes (-c 10, default heartbeat and poll intervals) loading this module. The entries
(`bench-0000` ...) are hourly, at minute i % 60, into a queue no worker reads, so no job runs: what is measured is
the lease (held by one process, asked for by the three others about once a second), the published table, and the
fire times that fall in the window (about 17 entries per minute). After a warm-up it measures, over the window,
Redis commands per second (INFO commandstats deltas, commands run inside Lua scripts included) and the CPU time
of each worker process (/proc). `--all-each-minute` makes every entry "* * * * *" instead: N fire times a minute,
all pushed by the lease holder in one script call. Prints a Markdown table and writes it to
benchmarks/results/cron.md.
"""

import os

from jiggler_gevent import job, periodic

ENTRIES = int(os.environ.get("BENCH_CRON_ENTRIES", "0"))
EACH_MINUTE = os.environ.get("BENCH_CRON_EACH_MINUTE") == "1"
PARKED = "bench-parked"


@job(retries=0, name="benchmarks.bench_cron.noop")  # named: this file also runs as __main__
def noop(i: int) -> None:
    """Never runs: the entries push it to a queue no worker reads."""


for _i in range(ENTRIES if __name__ != "__main__" else 0):
    periodic(
        "* * * * *" if EACH_MINUTE else f"{_i % 60} * * * *", noop, args=(_i,), name=f"bench-{_i:04d}", queue=PARKED
    )


import argparse  # noqa: E402  (below the entries: a worker importing this module needs nothing else)
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def commands(client: "object") -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def start_workers(
    url: str, namespace: str, entries: int, processes: int, each_minute: bool
) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_CRON_ENTRIES=str(entries))
    env["BENCH_CRON_EACH_MINUTE"] = "1" if each_minute else "0"
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "benchmarks.bench_cron", "-c", "10"]
    argv += ["--redis-url", url, "--namespace", namespace]
    return [
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]


def measure(
    url: str, entries: int, processes: int, seconds: float, warmup: float, each_minute: bool = False
) -> dict[str, float]:
    """Run `processes` workers with `entries` entries; the figures over `seconds` after `warmup`."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    namespace = f"bench-cron-{uuid.uuid4().hex[:8]}"
    procs = start_workers(url, namespace, entries, processes, each_minute)
    try:
        deadline = time.monotonic() + 60
        while client.scard(f"{namespace}:processes") < processes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(warmup)  # let every process reach its steady state (imports, first beats, the lease)
        before, cpu_before, t0 = commands(client), [cpu_seconds(p.pid) for p in procs], time.monotonic()
        time.sleep(seconds)
        after, cpu_after, elapsed = commands(client), [cpu_seconds(p.pid) for p in procs], time.monotonic() - t0
        fired = client.llen(f"{namespace}:queue:{PARKED}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
    delta = {name: after[name] - before.get(name, 0) for name in after}
    delta.pop("info", None)  # this script's own INFO calls
    cpu = sorted(b - a for a, b in zip(cpu_before, cpu_after, strict=True))
    return {
        "entries": entries,
        "each_minute": each_minute,
        "commands": sum(delta.values()) / elapsed,
        "evalsha": delta.get("evalsha", 0) / elapsed,
        "cpu_total": 100 * sum(cpu) / elapsed,
        "cpu_max": 100 * cpu[-1] / elapsed,
        "cpu_min": 100 * cpu[0] / elapsed,
        "fired": fired,
        "elapsed": elapsed,
    }


def table(rows: list[dict[str, float]], processes: int) -> str:
    """The figures as a Markdown table."""
    lines = [
        f"| {processes} workers, idle | Redis commands/s | of which EVALSHA/s | worker CPU, all {processes} "
        "(% of a core) | busiest / least busy process | fire times in the window |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        label = f"{int(row['entries']):,} entries" + (", all each minute" if row["each_minute"] else "")
        lines.append(
            f"| {label} | {row['commands']:.1f} | {row['evalsha']:.1f} | {row['cpu_total']:.2f}% | "
            f"{row['cpu_max']:.2f}% / {row['cpu_min']:.2f}% | {int(row['fired'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window (default 30)")
    parser.add_argument("--warmup", type=float, default=12.0, help="seconds before measuring (default 12)")
    parser.add_argument("--entries", type=int, default=1000, help="periodic entries (default 1000)")
    parser.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--all-each-minute", action="store_true", help='also a run with every entry "* * * * *"')
    args = parser.parse_args()
    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        rows = [measure(url, n, args.processes, args.seconds, args.warmup) for n in (0, args.entries)]
        if args.all_each_minute:
            rows.append(measure(url, args.entries, args.processes, args.seconds, args.warmup, each_minute=True))
    finally:
        stop()
    text = table(rows, args.processes)
    print(text)
    out = ROOT / "benchmarks" / "results" / "cron.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"`python -m benchmarks.bench_cron --seconds {args.seconds:g}`\n\n{text}\n")


if __name__ == "__main__":
    main()
