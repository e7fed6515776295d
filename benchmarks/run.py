"""`python -m benchmarks.run [--quick] [--only ROW...] [--systems SYSTEM...]`: the benchmark table.

Every system runs the same workloads, one run after the other, against one private redis-server started
for the benchmark (never the Redis on 6379). For each run: flush Redis, push the jobs in the system's own
format (a subprocess), start the worker, and time from its start until the last job's INCR of the done
counter is seen (not until the queue is empty). Peak RSS and CPU are summed over the worker's whole
process tree; Redis commands per job come from INFO commandstats (the harness's own polls subtracted).
The enqueue-throughput and latency rows are client_rows.py's. The tables go to stdout and to
benchmarks/results/ (git-ignored), with each worker's log. Every process started is killed at the end, also
on Ctrl-C; each system's module (benchmarks/sys_<name>.py) gives its worker's and enqueuer's command lines.
"""

import argparse
import compileall
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import redis

from benchmarks import client_rows, common, procs
from jiggler_gevent.demo import local_redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ["jiggler", "floor", "celery", "dramatiq", "huey", "rq", "sidekiq", "sidekiq-yjit", "bullmq"]
PEERS = ["celery", "dramatiq", "huey", "rq"]
PACKAGES = {"jiggler": "jiggler_gevent", "celery": "celery", "dramatiq": "dramatiq", "huey": "huey", "rq": "rq"}


@dataclass(frozen=True)
class Row:
    """One workload at one concurrency (and number of processes)."""

    id: str
    workload: str
    jobs: int
    quick_jobs: int
    concurrency: int
    processes: int = 1

    @property
    def ceiling(self) -> float | None:
        """Jobs/s if every slot were always busy waiting on the I/O: concurrency / latency (I/O rows only)."""
        latency = common.LATENCY.get(self.workload)
        return self.concurrency / latency if latency else None


ROWS = [
    Row("noop", "noop", 20_000, 2_000, 10),
    Row("noop-p2", "noop", 20_000, 2_000, 10, processes=2),
    Row("sleep-c10", "sleep", 1_000, 100, 10),
    Row("sleep-c100", "sleep", 1_000, 300, 100),
    Row("sleep-c1000", "sleep", 20_000, 2_000, 1000),
    Row("http-c10", "http", 1_000, 100, 10),
    Row("http-c100", "http", 1_000, 300, 100),
    Row("pg-c15", "pg", 1_000, 90, 15),
    Row("pg-c50", "pg", 1_000, 200, 50),
    Row("file-c5", "file", 20_000, 1_000, 5),
    Row("fib-c5", "fib", 100, 20, 5),
    Row("fib-c5-p2", "fib", 100, 20, 5, processes=2),
]


@dataclass
class Result:
    """What one run of one system on one row measured."""

    row: str
    system: str
    jobs: int
    status: str = "ok"
    total_s: float = 0.0
    first_s: float = 0.0
    peak_rss: int = 0
    cpu_s: float = 0.0
    redis_cmds: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Jobs/s from the worker's start to the last job done."""
        return self.jobs / self.total_s if self.status == "ok" and self.total_s else 0.0

    @property
    def steady(self) -> float:
        """Jobs/s from the first job done to the last: the rate without the boot."""
        span = self.total_s - self.first_s
        return (self.jobs - 1) / span if self.status == "ok" and span > 0 else 0.0


# --- services -----------------------------------------------------------------------------------------


def wait_for_port(port: int, deadline: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port (RuntimeError after `deadline` seconds)."""
    end = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def start_http() -> "tuple[str, subprocess.Popen]":
    """The local HTTP server of the http rows (answers every GET after 0.2 s): its URL and process."""
    port = local_redis.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.slow_http", str(port), str(common.SLEEP)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    wait_for_port(port)
    return f"http://127.0.0.1:{port}/", proc


def prepare_postgres(dsn: str) -> str | None:
    """Create the benchmark's own database if needed; returns why PostgreSQL cannot be used, or None."""
    import psycopg2

    params = dict(part.split("=", 1) for part in dsn.split())
    dbname = params.pop("dbname", "jiggler_bench")
    try:
        conn = psycopg2.connect(" ".join(f"{k}={v}" for k, v in params.items()) + " dbname=postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{dbname}"')
        conn.close()
    except psycopg2.Error as exc:
        return f"no PostgreSQL: {str(exc).strip().splitlines()[0]}"
    return None


# --- one run ------------------------------------------------------------------------------------------


def max_concurrency(system: str) -> int | None:
    """The most slots the system's worker can be given here (None: no cap)."""
    return getattr(procs.system_module(system), "MAX_CONCURRENCY", None)


def skip_reason(system: str, row: Row, pg_problem: str | None) -> str | None:
    """Why the system cannot run the row, or None."""
    problem = procs.system_problem(system, row.workload)
    if problem:
        return problem
    if row.processes > 1 and not procs.system_module(system).MULTI_PROCESS:
        return "one process only in its gevent mode"
    cap = max_concurrency(system)
    if cap is not None and row.concurrency > cap:
        return f"one process per slot: capped at {cap}"
    if row.workload == "pg" and pg_problem:
        return pg_problem
    return None


def run_one(system: str, row: Row, jobs: int, env: dict[str, str], client: redis.Redis) -> Result:
    """One throughput run: push the jobs, start the worker, time it until the last job's INCR is seen."""
    result = Result(row.id, system, jobs)
    mod = procs.system_module(system)
    client.flushall()
    if os.path.exists(common.FILE):
        os.unlink(common.FILE)
    pushed = subprocess.run(
        procs.enqueuer_command(system, ["preload", row.workload, str(jobs)]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if pushed.returncode != 0:
        result.status = f"enqueue failed: {(pushed.stderr.strip().splitlines() or ['?'])[-1]}"
        return result
    client.config_resetstat()
    log_path = RESULTS / "logs" / f"{row.id}-{system}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timeout = 60 + jobs * 0.005 + (3 * jobs / row.ceiling if row.ceiling else 0)
    polls = 0
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            mod.command(row.concurrency, row.processes),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler = procs.TreeSampler(proc.pid)
        sampler.start()
        try:
            while True:
                time.sleep(0.005)
                count = int(client.get(common.DONE_KEY) or 0)
                polls += 1
                now = time.monotonic() - started
                if count and not result.first_s:
                    result.first_s = now
                if count >= jobs:
                    result.total_s = now
                    break
                if proc.poll() is not None:
                    result.status = f"worker exited with code {proc.returncode} after {count} jobs"
                    break
                if now > timeout:
                    result.status = f"timed out after {timeout:.0f}s with {count} of {jobs} jobs"
                    break
        finally:
            result.cpu_s = sampler.stop()
            result.peak_rss = sampler.peak_rss
            procs.kill_tree(proc)
    stats = client.info("commandstats")
    result.redis_cmds = max(0, sum(v["calls"] for v in stats.values()) - polls)
    return result


# --- the table ----------------------------------------------------------------------------------------


def table(rows: Sequence[Row], results: list[Result]) -> str:
    """The throughput table: one line per row and system."""
    lines = [
        "| row | system | jobs | conc. | total s | first done s | jobs/s | after 1st | vs best peer | ceiling/s "
        "| of ceiling | peak RSS MiB | CPU ms/job | Redis cmds/job |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mine = [r for r in results if r.row == row.id]
        best = max((r.rate for r in mine if r.system in PEERS), default=0.0)
        for r in mine:
            conc = f"{row.concurrency}" + (f" x{row.processes}p" if row.processes > 1 else "")
            if r.status != "ok":
                lines.append(f"| {row.id} | {r.system} | {r.jobs} | {conc} | {r.status} ||||||||||")
                continue
            ratio = f"{r.rate / best:.2f}x" if best else "-"
            ceiling = f"{row.ceiling:.0f}" if row.ceiling else "-"
            frac = f"{100 * r.rate / row.ceiling:.0f}%" if row.ceiling else "-"
            lines.append(
                f"| {row.id} | {r.system} | {r.jobs} | {conc} | {r.total_s:.2f} | {r.first_s:.2f} | {r.rate:,.0f} "
                f"| {r.steady:,.0f} | {ratio} | {ceiling} | {frac} | {r.peak_rss / 2**20:.0f} "
                f"| {1000 * r.cpu_s / r.jobs:.2f} "
                f"| {r.redis_cmds / r.jobs:.1f} |"
            )
    return "\n".join(lines)


def header(quick: bool, systems: Sequence[str]) -> str:
    """The report's first lines: date, machine, load and every system's version."""
    versions = []
    for system, package in PACKAGES.items():
        try:
            versions.append(f"{system} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{system} {getattr(__import__(package), '__version__', '?')}")
    for package in ("gevent", "redis"):
        versions.append(f"{package} {metadata.version(package)}")
    if any(s.startswith("sidekiq") for s in systems) and not procs.system_problem("sidekiq"):
        versions.append(procs.system_module("sidekiq").version())
    if "bullmq" in systems and not procs.system_problem("bullmq"):
        versions.append(procs.system_module("bullmq").version())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"jiggler_gevent benchmark, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
        f"{' (--quick: small job counts)' if quick else ''}\n\n"
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at start {load}; "
        f"{'; '.join(versions)}.\n"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="Small job counts (the whole table in a few minutes).")
    ids = dict.fromkeys([r.id for r in ROWS] + [name for r in client_rows.ROWS for name in (r.group, r.id)])
    p.add_argument("--only", nargs="+", metavar="ROW", help=f"Rows to run, by id, workload or group: {', '.join(ids)}.")
    p.add_argument(
        "--systems",
        nargs="+",
        metavar="SYSTEM",
        default=SYSTEMS,
        choices=SYSTEMS,
        help=f"Systems to run (default: all): {', '.join(SYSTEMS)}.",
    )
    p.add_argument("--jobs", type=int, help="Override every selected throughput or enqueue row's job count.")
    return p.parse_args(argv)


def select_rows(only: Sequence[str] | None) -> tuple[list[Row], list[client_rows.EnqueueRow | client_rows.LatencyRow]]:
    """The throughput rows and the client-side rows named by `only` (every row when it is not given)."""
    if not only:
        return list(ROWS), list(client_rows.ROWS)
    rows = [r for r in ROWS if r.id in only or r.workload in only]
    unknown = set(only) - {r.id for r in rows} - {r.workload for r in rows} - client_rows.names()
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(sorted(unknown))}; see --help")
    return rows, client_rows.select(only)


def compile_sources() -> None:
    """Write the bytecode of this checkout, as an ordinary (non-editable) install does for every peer, so no
    worker compiles jiggler_gevent at each start (as it would with PYTHONDONTWRITEBYTECODE set)."""
    for folder in ("jiggler_gevent", "benchmarks"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)


def bench_env(url: str) -> dict[str, str]:
    """The environment of every process the harness starts; also set in this process (common, os.environ)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        BENCH_REDIS_URL=url,
        BENCH_FILE=str(Path(os.environ.get("TMPDIR", "/tmp")) / f"jiggler-bench-{os.getpid()}.txt"),
    )
    for name in ("JIGGLER_REDIS_URL", "REDIS_URL"):
        env.pop(name, None)
    os.environ.update(BENCH_REDIS_URL=url, BENCH_FILE=env["BENCH_FILE"])
    common.REDIS_URL, common.FILE = url, env["BENCH_FILE"]
    return env


def run_throughput(
    rows: Sequence[Row], args: argparse.Namespace, env: dict[str, str], client: redis.Redis, pg_problem: str | None
) -> list[Result]:
    """Every system on every throughput row."""
    results: list[Result] = []
    for row in rows:
        jobs = args.jobs or (row.quick_jobs if args.quick else row.jobs)
        for system in args.systems:
            reason = skip_reason(system, row, pg_problem)
            if reason:
                results.append(Result(row.id, system, jobs, status=f"skipped: {reason}"))
                continue
            r = run_one(system, row, jobs, env, client)
            results.append(r)
            print(
                f"{row.id:12} {system:12} {r.status if r.status != 'ok' else f'{r.rate:10,.0f} jobs/s'}"
                f"  ({r.total_s:.2f}s, first {r.first_s:.2f}s, peak {r.peak_rss / 2**20:.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )
    return results


def run_client_rows(
    rows: Sequence[client_rows.EnqueueRow | client_rows.LatencyRow],
    args: argparse.Namespace,
    env: dict[str, str],
    client: redis.Redis,
) -> list[client_rows.ClientResult]:
    """Every system on every enqueue and latency row."""
    results: list[client_rows.ClientResult] = []
    seconds = client_rows.QUICK_SECONDS if args.quick else client_rows.SECONDS
    for row in rows:
        for system in args.systems:
            reason = client_rows.skip_reason(system, row)
            if reason:
                r = client_rows.ClientResult(row.id, system, f"skipped: {reason}")
            elif isinstance(row, client_rows.EnqueueRow):
                jobs = args.jobs or (row.quick_jobs if args.quick else row.jobs)
                r = client_rows.run_enqueue(system, row, jobs, env, client)
            else:
                r = client_rows.run_latency(system, row, seconds, env, client, RESULTS / "logs")
            results.append(r)
            summary = (
                f"{r.rate:10,.0f} jobs/s"
                if isinstance(row, client_rows.EnqueueRow)
                else (f"{r.done}/{r.jobs} ran, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
            )
            print(f"{row.id:16} {system:12} {r.status if r.status != 'ok' else summary}", file=sys.stderr, flush=True)
    return results


def write_report(report: str, quick: bool, results: list[Result], extra: list[client_rows.ClientResult]) -> None:
    """The report and the raw results to benchmarks/results/ (latest.md is the last one)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    (RESULTS / f"{stamp}.md").write_text(report)
    raw = {"throughput": [asdict(r) for r in results], "client": [asdict(r) for r in extra]}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(raw, indent=1))
    shutil.copyfile(RESULTS / f"{stamp}.md", RESULTS / "latest.md")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the selected rows on the selected systems and write the report; stop everything started, always."""
    args = parse_args(argv)
    rows, extra_rows = select_rows(args.only)
    top = header(args.quick, args.systems)
    compile_sources()
    url, stop_redis = local_redis.start_private()
    env = bench_env(url)
    http_proc = None
    if any(r.workload == "http" for r in rows):
        env["BENCH_HTTP_URL"], http_proc = start_http()
    pg_problem = prepare_postgres(common.PG_DSN) if any(r.workload == "pg" for r in rows) else None
    client = redis.Redis.from_url(url)
    try:
        results = run_throughput(rows, args, env, client, pg_problem)
        extra = run_client_rows(extra_rows, args, env, client)
    finally:
        if http_proc is not None:
            http_proc.kill()
        stop_redis()
        if os.path.exists(common.FILE):
            os.unlink(common.FILE)
    parts = [table(rows, results)] if rows else []
    if extra_rows:
        parts.append(client_rows.tables(extra_rows, args.systems, extra))
    report = top + "\n" + "\n\n".join(parts) + "\n"
    print(report)
    write_report(report, args.quick, results, extra)


if __name__ == "__main__":
    main()
