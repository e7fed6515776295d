"""JobMetricsFlush: the per-job metrics Counters tallied (runs, failures, run time, histogram, longest run per job
and UTC minute), added to NS:metrics:<minute> with each heartbeat (HINCRBY; each hash expires JOB_METRICS_TTL after
its minute). When jobs ran, one more call comes first: job_max.lua raises each job's longest run in the same hashes.
What a beat fails to write is given back to Counters for the next one; a clean stop writes what is left.
"""

from typing import Any

import redis

from .. import config, scripts
from ..keys import Keys
from .heartbeat import BeatPart
from .job_metrics import LONGEST, ROW, Counters, JobTally


class JobMetricsFlush(BeatPart):
    """Writes the per-job tally Counters gathered since the last beat."""

    at_stop = True

    def __init__(self, keys: Keys, counters: Counters) -> None:
        self.keys, self.counters = keys, counters
        self.taken: JobTally = {}  # taken for the beat under way

    def take(self, client: redis.Redis) -> None:
        self.taken = self.counters.take_jobs()
        self._raise_longest(client, self.taken)

    def queue(self, pipe: Any) -> None:
        expiring: set[int] = set()
        for (minute, job), row in self.taken.items():
            key = self.keys.metrics(minute)
            for field, n in zip(config.JOB_METRIC_FIELDS, row[:ROW], strict=True):
                if n:
                    pipe.hincrby(key, f"{job}|{field}", n)
            expiring.add(minute)
        for minute in expiring:
            pipe.expireat(self.keys.metrics(minute), minute * 60 + config.JOB_METRICS_TTL)

    def written(self, replies: list[Any]) -> None:
        self.taken = {}

    def failed(self) -> None:
        self.counters.give_back_jobs(self.taken)
        self.taken = {}

    def _raise_longest(self, client: redis.Redis, jobs: JobTally) -> None:
        """Raise each job's longest run of each minute in NS:metrics:<minute> (job_max.lua, one call per minute).

        Before the beat's pipeline, not in it: a Cluster pipeline cannot reload a script that EVALSHA misses. A
        maximum can be written twice, so when the beat fails after this, the tally given back is written again."""
        longest: dict[int, list[str | int]] = {}  # minute -> job_max.lua's ARGV
        for (minute, job), row in jobs.items():
            if row[LONGEST]:
                longest.setdefault(minute, []).extend((f"{job}|{config.JOB_MAX_FIELD}", row[LONGEST]))
        job_max = scripts.register(client).job_max
        for minute, pairs in longest.items():
            job_max(keys=[self.keys.metrics(minute)], args=pairs)
