"""Counters: the jobs a worker process ran, tallied in memory (server middleware); the heartbeat writes them.

The processed and failed counts of the process (NS:stat:*), and per job and UTC minute the runs, failures, run time
and run-time histogram (NS:metrics:<minute>). Moved unchanged out of the heartbeat's module.
"""

import bisect
import math
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..job import lookup
from ..middleware import Disposition, JobContext, ServerMiddleware

UNKNOWN = "unknown"  # the per-job metrics name of every payload naming no registered job
# A per-job tally row, by config.JOB_METRIC_FIELDS: runs, failures, total ms, then one count per histogram bucket
# (ROW numbers, added up); then the longest run in microseconds (LONGEST, a maximum: config.JOB_MAX_FIELD).
RUNS, FAILED, MS, HISTOGRAM = 0, 1, 2, 3
ROW = len(config.JOB_METRIC_FIELDS)
LONGEST = ROW
JobTally = dict[tuple[int, str], list[int]]  # (UTC minute, job name) -> row


class Counters(ServerMiddleware):
    """Counts the jobs run, in memory; the Monitor writes the counts with its heartbeat. Also server middleware.

    Two tallies: processed and failed for the process (NS:stat:*), and per job wire name and UTC minute the runs,
    failures, total run time (ms) and a run-time histogram (NS:metrics:<minute>, buckets config.JOB_TIME_BUCKETS).
    Recording is plain dict arithmetic, never a Redis call. A name no registered job has is tallied as "unknown",
    so payloads with made-up names cannot grow the tally, nor the hash, without bound.

    What it guarantees: counts reach Redis at most one heartbeat interval late while Redis answers; when a beat
    fails they are kept for the next one (per-job minutes older than JOB_METRICS_TTL are dropped then); a clean
    stop writes them; what a process counted since its last beat is lost if it is killed (SIGKILL, out of memory).
    """

    def __init__(self, known: Callable[[str], bool] = lambda name: lookup(name) is not None) -> None:
        self.processed = 0
        self.failed = 0
        self.jobs: JobTally = {}
        self.known = known

    def count(self, failed: bool) -> None:
        """One more job run; `failed` when it raised or could not run."""
        self.processed += 1
        if failed:
            self.failed += 1

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload buried without running (its dead-set entry): processed and failed, no run time."""
        self.count(failed=True)
        self.record(entry.get("name"), None, True)

    def after_process(self, ctx: JobContext) -> None:
        if ctx.disposition != Disposition.RESCHEDULE:  # over a limit: not run, put back
            failed = ctx.exception is not None
            self.count(failed)
            self.record(ctx.payload.get("name"), time.time() - ctx.started_at, failed)

    def record(self, name: object, seconds: float | None, failed: bool) -> None:
        """One run of job `name` ending now, that took `seconds` (None: it could not run)."""
        job = name if isinstance(name, str) and self.known(name) else UNKNOWN
        key = (int(time.time() // 60), job)
        row = self.jobs.get(key)
        if row is None:
            row = self.jobs[key] = [0] * (ROW + 1)
        row[RUNS] += 1
        if failed:
            row[FAILED] += 1
        if seconds is not None:
            seconds = max(0.0, seconds)
            row[MS] += round(seconds * 1000)
            row[HISTOGRAM + bisect.bisect_left(config.JOB_TIME_BUCKETS, seconds)] += 1
            micros = math.ceil(seconds * 1_000_000) or 1  # 0 means "no run with a time"
            if micros > row[LONGEST]:
                row[LONGEST] = micros

    def take(self) -> "tuple[int, int]":
        """The counts since the last take, zeroed."""
        counts = (self.processed, self.failed)
        self.processed = self.failed = 0
        return counts

    def give_back(self, processed: int, failed: int) -> None:
        """Return counts that could not be written."""
        self.processed += processed
        self.failed += failed

    def take_jobs(self) -> JobTally:
        """The per-job tally since the last take, emptied."""
        jobs, self.jobs = self.jobs, {}
        return jobs

    def give_back_jobs(self, jobs: JobTally) -> None:
        """Return a per-job tally that could not be written, but for minutes already expired in Redis."""
        oldest = int(time.time() // 60) - config.JOB_METRICS_TTL // 60
        for key, row in jobs.items():
            if key[0] < oldest:
                continue
            mine = self.jobs.get(key)
            if mine is None:
                self.jobs[key] = row
            else:
                merged = [a + b for a, b in zip(mine[:ROW], row[:ROW], strict=True)]
                self.jobs[key] = [*merged, max(mine[LONGEST], row[LONGEST])]
