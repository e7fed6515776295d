"""Metrics, JobSummary: the per-job execution metrics the workers' heartbeats add to NS:metrics:<minute> (runs,
failures, total run time, a run-time histogram and the longest run per job per UTC minute, kept JOB_METRICS_TTL),
read for the last N minutes in one round trip. Percentiles are estimated from the histogram, as Prometheus'
histogram_quantile does, and never exceed the longest run (an estimate inside a wide bucket could). Re-exported by
api.py.
"""

import time
from collections.abc import Iterator
from typing import Any, cast

from .. import config

MAX_MINUTES = config.JOB_METRICS_TTL // 60
BOUNDS = config.JOB_TIME_BUCKETS
FIELD_INDEX = {f: i for i, f in enumerate(config.JOB_METRIC_FIELDS)}
RUNS, FAILED, MS, EXPIRED, HISTOGRAM = 0, 1, 2, 3, 4
ROW = len(config.JOB_METRIC_FIELDS)


class JobSummary:
    """One job's metrics over some minutes: `name` (its wire name, a Django task's path (tally.py), or "unknown" for
    payloads naming no registered job), `runs`, `failures`, `expired` (jobs not started by their deadline, never run),
    `total` (seconds of run time) and `histogram` (runs per bucket of config.JOB_TIME_BUCKETS, one more for longer
    runs), `longest` (seconds, the slowest run; None when unknown).
    Runs of payloads that could not run have no time."""

    def __init__(self, name: str, row: list[int] | None = None, longest_us: int = 0) -> None:
        self.name = name
        self.row = row if row is not None else [0] * ROW
        self.longest_us = longest_us  # microseconds; 0: no run with a time, or written before it was recorded

    @property
    def runs(self) -> int:
        return self.row[RUNS]

    @property
    def failures(self) -> int:
        return self.row[FAILED]

    @property
    def expired(self) -> int:
        return self.row[EXPIRED]

    @property
    def total(self) -> float:
        return self.row[MS] / 1000

    @property
    def histogram(self) -> list[int]:
        return self.row[HISTOGRAM:]

    @property
    def longest(self) -> float | None:
        """The slowest run in seconds (to the microsecond, rounded up), or None when not recorded."""
        return self.longest_us / 1_000_000 if self.longest_us else None

    @property
    def timed(self) -> int:
        """Runs with a run time (those that ran)."""
        return sum(self.histogram)

    @property
    def average(self) -> float | None:
        """Mean run time in seconds; None without a timed run."""
        return self.total / self.timed if self.timed else None

    @property
    def p50(self) -> float | None:
        """Median run time (seconds, estimated), or None."""
        return self.percentile(0.5)

    @property
    def p95(self) -> float | None:
        """95th percentile run time (seconds, estimated), or None."""
        return self.percentile(0.95)

    def percentile(self, q: float) -> float | None:
        """The run time below which a fraction `q` of the timed runs fall, interpolated linearly inside its bucket;
        the last bound (config.JOB_TIME_BUCKETS[-1]) when it falls among the longer runs; never more than the
        longest run when that is known; None without runs."""
        value = estimate(self.histogram, q)
        if value is None or not self.longest_us:
            return value
        return min(value, self.longest_us / 1_000_000)

    def add(self, row: list[int], longest_us: int = 0) -> None:
        """Add a row of counts (by config.JOB_METRIC_FIELDS) and the longest run (microseconds) they include."""
        self.row = [a + b for a, b in zip(self.row, row, strict=True)]
        self.longest_us = max(self.longest_us, longest_us)

    def merge(self, other: "JobSummary") -> None:
        """Add `other`'s runs to these."""
        self.add(other.row, other.longest_us)

    def as_dict(self) -> dict[str, Any]:
        """The fields above, as `gjiggler metrics --json` prints them."""
        return {
            "name": self.name,
            "runs": self.runs,
            "failures": self.failures,
            "expired": self.expired,
            "total": self.total,
            "average": self.average,
            "p50": self.p50,
            "p95": self.p95,
            "longest": self.longest,
        }

    def __repr__(self) -> str:
        return f"<JobSummary {self.name!r} runs={self.runs} failures={self.failures} total={self.total:.3f}s>"


def estimate(histogram: list[int], q: float) -> float | None:
    """The `q` quantile (0..1) of the run times counted in `histogram` (by config.JOB_TIME_BUCKETS), or None."""
    count = sum(histogram)
    if not count:
        return None
    rank = q * count
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            if i == len(BOUNDS):
                return float(BOUNDS[-1])
            lower = BOUNDS[i - 1] if i else 0.0
            return lower + (BOUNDS[i] - lower) * max(0.0, rank - seen) / n
        seen += n
    return float(BOUNDS[-1])


class Metrics:
    """The per-job metrics of the last `minutes` UTC minutes (1 to 8 h of them), the current one included.

    `minutes` lists the starts of those minutes (unix seconds), oldest first; `jobs` has one JobSummary per job
    seen, most total run time first; `series(name)` gives a job's (or every job's) summary minute by minute.
    """

    def __init__(self, minutes: int = 60, now: float | None = None) -> None:
        cfg = config.current()
        self.redis, self.keys = config.redis_client(cfg.url), cfg.keys
        count = max(1, min(int(minutes), MAX_MINUTES))
        last = int((time.time() if now is None else now) // 60)
        self.minutes = [m * 60 for m in range(last - count + 1, last + 1)]
        self._by_minute = self._load()
        totals: dict[str, JobSummary] = {}
        for rows in self._by_minute:
            for name, summary in rows.items():
                totals.setdefault(name, JobSummary(name)).merge(summary)
        self.jobs = sorted(totals.values(), key=lambda j: (-j.total, -j.runs, j.name))

    def _load(self) -> list[dict[str, JobSummary]]:
        with self.redis.pipeline(transaction=False) as pipe:
            for start in self.minutes:
                pipe.hgetall(self.keys.metrics(start // 60))
            replies = cast("list[dict[str, str]]", pipe.execute())
        return [_rows(reply) for reply in replies]

    def __iter__(self) -> Iterator[JobSummary]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def job(self, name: str) -> JobSummary | None:
        """The summary of job `name` over the period, or None when it has no run in it."""
        return next((j for j in self.jobs if j.name == name), None)

    def series(self, name: str | None = None) -> list[JobSummary]:
        """One summary per minute of `minutes` for job `name` (every job added up when None)."""
        out = []
        for rows in self._by_minute:
            summary = JobSummary(name or "*")
            for job, found in rows.items():
                if name is None or job == name:
                    summary.merge(found)
            out.append(summary)
        return out

    def as_dict(self, job: str | None = None) -> dict[str, Any]:
        """The period, the job summaries and the per-minute runs and failures (of job `job` when given, with its
        histogram and per-minute p50 and p95), as `gjiggler metrics --json` prints them."""
        series = self.series(job)
        out: dict[str, Any] = {
            "minutes": self.minutes,
            "jobs": [j.as_dict() for j in self.jobs if job is None or j.name == job],
            "runs": [s.runs for s in series],
            "failures": [s.failures for s in series],
        }
        if job is not None:
            summary = self.job(job) or JobSummary(job)
            out["histogram"] = [
                {"le": bound, "count": n} for bound, n in zip((*BOUNDS, None), summary.histogram, strict=True)
            ]
            out["p50"] = [s.p50 for s in series]
            out["p95"] = [s.p95 for s in series]
        return out


def _rows(reply: dict[str, str]) -> dict[str, JobSummary]:
    """A minute's hash as job name -> its summary for that minute."""
    rows: dict[str, JobSummary] = {}
    for field, value in reply.items():
        name, _, kind = field.rpartition("|")
        if not name:
            continue
        index = FIELD_INDEX.get(kind)
        if not value.isdigit():  # what the heartbeat wrote is whole numbers (HINCRBY, the max script); else skipped
            continue
        if index is not None:
            rows.setdefault(name, JobSummary(name)).row[index] += int(value)
        elif kind == config.JOB_MAX_FIELD:
            summary = rows.setdefault(name, JobSummary(name))
            summary.longest_us = max(summary.longest_us, int(value))
    return rows
