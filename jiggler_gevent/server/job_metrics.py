"""Counters: the jobs a worker process ran, tallied in memory (server middleware); the heartbeat writes them.

The processed, failed and expired counts of the process (NS:stat:*), and per job and UTC minute the runs, failures,
run time, expired jobs and run-time histogram (NS:metrics:<minute>). Moved unchanged out of the heartbeat's module.
"""

import math
import time
from collections.abc import Callable
from typing import Any

from .. import config
from ..middleware import JobContext, ServerMiddleware
from . import tally
from .tally import UNKNOWN as UNKNOWN  # decided in tally.py, still importable from here
from .tally import Tallied, registered

# A per-job tally row, by config.JOB_METRIC_FIELDS: runs, failures, total ms, expired, then one count per histogram
# bucket (ROW numbers, added up); then the longest run in microseconds (LONGEST, a maximum: config.JOB_MAX_FIELD).
RUNS, FAILED, MS, EXPIRED, HISTOGRAM = 0, 1, 2, 3, 4
ROW = len(config.JOB_METRIC_FIELDS)
LONGEST = ROW
JobTally = dict[tuple[int, str], list[int]]  # (UTC minute, job name) -> row


class Counters(ServerMiddleware):
    """Counts the jobs run, in memory; the Monitor writes the counts with its heartbeat. A sink of tally.Tally,
    which decides what counts (`add`); also server middleware on its own (tests, embedders).

    Two tallies: processed and failed for the process (NS:stat:*), and per job wire name and UTC minute the runs,
    failures, total run time (ms) and a run-time histogram (NS:metrics:<minute>, buckets config.JOB_TIME_BUCKETS).
    Recording is plain dict arithmetic, never a Redis call. A name no registered job has is tallied as "unknown"
    (tally.UNKNOWN), so payloads with made-up names cannot grow the tally, nor the hash, without bound.

    What it guarantees: counts reach Redis at most one heartbeat interval late while Redis answers; when a beat
    fails they are kept for the next one (per-job minutes older than JOB_METRICS_TTL are dropped then); a clean
    stop writes them; what a process counted since its last beat is lost if it is killed (SIGKILL, out of memory).
    """

    per_wrapped = True  # a Django task's runs are charted under its path (tally.Sink)

    def __init__(self, known: Callable[[str], bool] = registered) -> None:
        self.processed = 0
        self.failed = 0
        self.expired = 0
        self.jobs: JobTally = {}
        self.known = known

    def count(self, failed: bool) -> None:
        """One more job run; `failed` when it raised or could not run."""
        self.processed += 1
        if failed:
            self.failed += 1

    def add(self, tallied: Tallied, processed: bool = True) -> None:
        """One finished job, as tally.py decided it; `processed` False: in its per-job row only."""
        job, _, failed, seconds, bucket = tallied
        if processed:
            self.processed += 1
            if failed:
                self.failed += 1
        row = self._row(job)
        row[RUNS] += 1
        if failed:
            row[FAILED] += 1
        if seconds is not None and bucket is not None:
            row[MS] += round(seconds * 1000)
            row[HISTOGRAM + bucket] += 1
            micros = math.ceil(seconds * 1_000_000) or 1  # 0 means "no run with a time"
            if micros > row[LONGEST]:
                row[LONGEST] = micros

    def _row(self, job: str) -> list[int]:
        """The per-job row of `job` for this minute."""
        key = (int(time.time() // 60), job)
        row = self.jobs.get(key)
        if row is None:
            row = self.jobs[key] = [0] * (ROW + 1)
        return row

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload buried without running (its dead-set entry): processed and failed, no run time."""
        self.add(tally.of_unrunnable(entry, self.known))

    def expire(self, job: str, queue: object) -> None:
        """A job not started by its deadline (tally.py named it): expired, not processed."""
        self.expired += 1
        self._row(job)[EXPIRED] += 1

    def after_process(self, ctx: JobContext) -> None:
        tally.Tally((self,), self.known).after_process(ctx)  # on its own; in a worker the chain's Tally feeds it

    def record(self, name: object, seconds: float | None, failed: bool) -> None:
        """One run of job `name` ending now, that took `seconds` (None: it could not run): its per-job row only."""
        self.add(tally.decide(name, None, failed, seconds, self.known), processed=False)

    def take(self) -> "tuple[int, int, int]":
        """The counts since the last take (processed, failed, expired), zeroed."""
        counts = (self.processed, self.failed, self.expired)
        self.processed = self.failed = self.expired = 0
        return counts

    def give_back(self, processed: int, failed: int, expired: int) -> None:
        """Return counts that could not be written."""
        self.processed += processed
        self.failed += failed
        self.expired += expired

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
