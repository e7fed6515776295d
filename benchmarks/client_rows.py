"""The client-side rows: enqueue throughput, and end-to-end latency at a steady rate (run by run.py).

Enqueue (`enqueue`, `enqueue-bulk`): the system's own client pushes N noop jobs, one call per job or through its
bulk API 1,000 a call, with no worker running; the enqueuer process times its loop only (after its imports and
one untimed push) and reports it as JSON.

Latency (`latency-1q-RATE`, `latency-3q-RATE`; groups `latency-1q`, `latency-3q`): the worker starts first (-c 20,
one process) on one queue or on `mail`, `low`, `default`; the enqueuer waits until a warm-up probe per queue has
run, then pushes probes at RATE per second for SECONDS against absolute deadlines, each to a random one of the
queues, carrying its time.time(). A probe's first act is to RPUSH (start - enqueued); p50 and p99 are over every
probe that ran, with the count, so a system that falls behind shows it.
"""

import json
import math
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks import common, procs

CONCURRENCY = 20
SECONDS, QUICK_SECONDS = 10.0, 2.0
REFERENCE = "sidekiq"  # the ratios' reference system


@dataclass(frozen=True)
class EnqueueRow:
    """N noop jobs pushed one call at a time (single) or through the bulk API (bulk)."""

    id: str
    mode: str
    jobs: int
    quick_jobs: int

    @property
    def group(self) -> str:
        """The name `--only` selects it by (its id)."""
        return self.id


@dataclass(frozen=True)
class LatencyRow:
    """Probes at a steady rate to a worker on one or several queues."""

    id: str
    group: str
    queues: tuple[str, ...]
    rate: int


ENQUEUE_ROWS = [EnqueueRow("enqueue", "single", 20_000, 1_000), EnqueueRow("enqueue-bulk", "bulk", 50_000, 10_000)]
LATENCY_ROWS = [
    LatencyRow(f"latency-{len(queues)}q-{rate}", f"latency-{len(queues)}q", queues, rate)
    for queues in ((common.QUEUE,), common.LATENCY_QUEUES)
    for rate in (50, 500, 2000)
]
ROWS: list[EnqueueRow | LatencyRow] = [*ENQUEUE_ROWS, *LATENCY_ROWS]


@dataclass
class ClientResult:
    """What one run of one system on one client-side row measured (times in seconds, latencies in ms)."""

    row: str
    system: str
    status: str = "ok"
    jobs: int = 0
    seconds: float = 0.0
    done: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    behind_ms: float = 0.0

    @property
    def rate(self) -> float:
        """Jobs pushed per second."""
        return self.jobs / self.seconds if self.status == "ok" and self.seconds else 0.0


def select(only: Sequence[str] | None) -> list[EnqueueRow | LatencyRow]:
    """The rows named by id or group (none when `only` is not given: the default run is the throughput table's)."""
    return [r for r in ROWS if only and (r.id in only or r.group in only)]


def names() -> set[str]:
    """Every id and group `--only` accepts for these rows."""
    return {r.id for r in ROWS} | {r.group for r in ROWS}


def skip_reason(system: str, row: EnqueueRow | LatencyRow) -> str | None:
    """Why the system cannot run the row, or None."""
    problem = procs.system_problem(system)
    if problem:
        return problem
    mod = procs.system_module(system)
    if isinstance(row, EnqueueRow):
        return "no bulk API" if row.mode == "bulk" and mod.BULK is None else None
    if len(row.queues) > 1 and getattr(mod, "NO_MULTI_QUEUE", None):
        return mod.NO_MULTI_QUEUE
    cap = getattr(mod, "MAX_CONCURRENCY", None)
    return f"one process per slot: capped at {cap}" if cap is not None and cap < CONCURRENCY else None


def _last_json(out: str) -> dict:
    """The JSON object on the last line of an enqueuer's output."""
    return json.loads(out.strip().splitlines()[-1])


def _failure(what: str, proc: "subprocess.CompletedProcess[str]") -> str:
    return f"{what} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}"


def run_enqueue(system: str, row: EnqueueRow, jobs: int, env: dict[str, str], client: redis.Redis) -> ClientResult:
    """Time the system's enqueuer pushing `jobs` noop jobs (no worker)."""
    client.flushall()
    pushed = subprocess.run(
        procs.enqueuer_command(system, [row.mode, str(jobs)]),
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pushed.returncode != 0:
        return ClientResult(row.id, system, _failure("enqueue", pushed))
    report = _last_json(pushed.stdout)
    return ClientResult(row.id, system, jobs=report["jobs"], seconds=report["seconds"])


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def _drain(client: redis.Redis, worker: subprocess.Popen, sent: int, limit: float) -> None:
    """Wait until every probe has run, the worker has died, or `limit` seconds have gone by (or 10 s with none)."""
    end, last, progress = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < end and worker.poll() is None:
        done = client.llen(common.LATENCY_KEY)
        if done >= sent:
            return
        if done != last:
            last, progress = done, time.monotonic()
        elif time.monotonic() - progress > 10:
            return
        time.sleep(0.05)


def _measure(row: LatencyRow, system: str, report: dict, client: redis.Redis) -> ClientResult:
    """The result from the enqueuer's report and the probes' list."""
    waits = sorted(1000 * float(v) for v in client.lrange(common.LATENCY_KEY, 0, -1))
    return ClientResult(
        row.id,
        system,
        jobs=report["sent"],
        seconds=report["seconds"],
        done=len(waits),
        p50_ms=_percentile(waits, 0.50),
        p99_ms=_percentile(waits, 0.99),
        max_ms=waits[-1] if waits else 0.0,
        behind_ms=report["behind_ms"],
    )


def run_latency(
    system: str, row: LatencyRow, seconds: float, env: dict[str, str], client: redis.Redis, logs: Path
) -> ClientResult:
    """Start the worker, pace probes at it from the system's enqueuer, and read how long each one waited."""
    client.flushall()
    mod = procs.system_module(system)
    logs.mkdir(parents=True, exist_ok=True)
    args = ["paced", str(row.rate), str(seconds), *row.queues]
    with open(logs / f"{row.id}-{system}.log", "wb") as log:
        worker = subprocess.Popen(
            mod.command(CONCURRENCY, 1, row.queues),
            cwd=procs.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            paced = subprocess.run(
                procs.enqueuer_command(system, args),
                cwd=procs.ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=90 + 2 * seconds,
            )
            if paced.returncode != 0:
                return ClientResult(row.id, system, _failure("enqueuer", paced))
            report = _last_json(paced.stdout)
            _drain(client, worker, report["sent"], 10 + 3 * seconds)
            result = _measure(row, system, report, client)
            if worker.poll() is not None:
                result.status = f"worker exited with code {worker.returncode} after {result.done} probes"
            return result
        finally:
            procs.kill_tree(worker)


# --- the tables ---------------------------------------------------------------------------------------


def _ratio(value: float, reference: float) -> str:
    """value / reference, as 1.23x (or 1,234x)."""
    if not value or not reference:
        return "-"
    ratio = value / reference
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.2f}x"


def _find(results: list[ClientResult], row: str, system: str) -> ClientResult | None:
    return next((r for r in results if r.row == row and r.system == system), None)


def enqueue_table(systems: Sequence[str], results: list[ClientResult]) -> str:
    """One line per system: single and bulk enqueue rates, each with its ratio to Sidekiq's."""
    lines = [
        f"| system | single: jobs | jobs/s | vs {REFERENCE} | bulk: API | jobs | jobs/s | vs {REFERENCE} |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for system in systems:
        cells = []
        for row in ENQUEUE_ROWS:
            r, ref = _find(results, row.id, system), _find(results, row.id, REFERENCE)
            if r is None:
                cells.append("- | - | -" if row.mode == "single" else "- | - | - | -")
                continue
            api = [getattr(procs.system_module(system), "BULK", None) or "-"] if row.mode == "bulk" else []
            if r.status != "ok":
                cells.append(" | ".join([*api, r.status, "", ""]))
                continue
            rate = f"{r.rate:,.0f}"
            cells.append(" | ".join([*api, f"{r.jobs:,}", rate, _ratio(r.rate, ref.rate if ref else 0.0)]))
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency_table(group: str, systems: Sequence[str], results: list[ClientResult]) -> str:
    """For each rate, one line per system: probes sent and run, p50, p99 and max wait, p50 and p99 against
    Sidekiq's."""
    lines = [
        f"| rate/s | system | sent | sent/s | ran | p50 ms | p99 ms | max ms | p50 vs {REFERENCE} "
        f"| p99 vs {REFERENCE} | enqueuer late ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in (r for r in LATENCY_ROWS if r.group == group):
        ref = _find(results, row.id, REFERENCE)
        for system in systems:
            r = _find(results, row.id, system)
            if r is None:
                continue
            if r.status != "ok":
                lines.append(f"| {row.rate:,} | {system} | {r.status} |||||||||")
                continue
            lines.append(
                f"| {row.rate:,} | {system} | {r.jobs:,} | {r.rate:,.0f} | {r.done:,} | {r.p50_ms:.2f} "
                f"| {r.p99_ms:.2f} | {r.max_ms:.1f} | {_ratio(r.p50_ms, ref.p50_ms if ref else 0.0)} "
                f"| {_ratio(r.p99_ms, ref.p99_ms if ref else 0.0)} | {r.behind_ms:.1f} |"
            )
    return "\n".join(lines)


def tables(rows: Sequence[EnqueueRow | LatencyRow], systems: Sequence[str], results: list[ClientResult]) -> str:
    """The markdown of the selected client-side rows: the enqueue table, then one latency table per queue setup."""
    parts = []
    if any(isinstance(r, EnqueueRow) for r in rows):
        parts.append(
            "Enqueue throughput (jobs/s measured inside the enqueuing process):\n\n" + enqueue_table(systems, results)
        )
    for group, title in (
        ("latency-1q", "one queue"),
        ("latency-3q", f"three queues ({', '.join(common.LATENCY_QUEUES)})"),
    ):
        if any(r.group == group for r in rows):
            parts.append(
                f"Latency from enqueue to job start, worker -c {CONCURRENCY} on {title}:\n\n"
                + latency_table(group, systems, results)
            )
    return "\n\n".join(parts)
