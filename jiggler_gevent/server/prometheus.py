"""Prometheus metrics of a worker (`--metrics-port PORT`): per-job counts and run times, and Redis sizes on scrape.

Imported only when --metrics-port is given, so nothing of prometheus_client is loaded otherwise.
`JobMetrics` is a sink of tally.Tally (server middleware, outermost in the chain), which decides what counts:
every finished job counts in
`jiggler_jobs_processed_total{job,queue}`, failures also in `jiggler_jobs_failed_total`, as in Sidekiq; a job that
ran observes `jiggler_job_duration_seconds`; a payload that could not run (unknown name, bad arguments, not a
payload) counts as processed and failed; a job not started by its deadline counts in `jiggler_jobs_expired_total`
only. The `job` label is the wire name of a job registered in this worker, else
"unknown"; the `queue` label one of the worker's queues, else "unknown": a flood of odd payloads makes one series.
`RedisCollector` reads the queue sizes and latencies, the scheduled, retry and dead set sizes and the live
processes in two round trips per scrape (keys.py directly: the server never loads the admin side).

Recording is plain Python: a job adds to a `Series` of its labels in a dict (no lock, no prometheus_client object);
`jiggler_busy_workers` is the processor's busy count read at scrape or flush time. The families are built from
those dicts when scraped (`JobCollector`).

One process serves /metrics itself (`serve`). With -p N the supervisor names a directory in DIR_ENV before it
forks: each child writes its cumulative totals and live gauges there as `<pid>.json` (atomically) every
FLUSH_INTERVAL and when it stops, and serves nothing; the supervisor serves the sum of the files
(`serve_supervised`). When a child has exited, `forget_process` folds its totals into `retired.json` and drops its
gauges. So totals never go down when a child is replaced; a child stopped gracefully loses nothing, one SIGKILLed
loses at most its last FLUSH_INTERVAL of counts.
"""

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import waiting
from ..config import JOB_TIME_BUCKETS
from ..errors import ConfigError
from ..keys import Keys
from ..middleware import JobContext, ServerMiddleware
from . import tally
from .loop import Loop
from .tally import UNKNOWN, Tallied, registered

log = logging.getLogger("jiggler_gevent.metrics")

DIR_ENV = "JIGGLER_METRICS_DIR"  # set by the supervisor: its children write snapshots there, serve nothing
BUCKETS = (*JOB_TIME_BUCKETS, float("inf"))  # the same bounds as the per-job metrics in Redis (tally.py's buckets)
FLUSH_INTERVAL = 1.0
RETIRED = "retired.json"
_LE = tuple("+Inf" if b == float("inf") else repr(float(b)) for b in BUCKETS)  # as prometheus_client writes `le`
_LABELS = ("job", "queue")


class Series:
    """Cumulative totals of one (job, queue) label pair: counts, run time, and per-bucket (not cumulative) counts."""

    __slots__ = ("processed", "failed", "seconds", "counts", "expired")

    def __init__(
        self,
        processed: int = 0,
        failed: int = 0,
        seconds: float = 0.0,
        counts: list[int] | None = None,
        expired: int = 0,
    ):
        self.processed, self.failed, self.seconds, self.expired = processed, failed, seconds, expired
        self.counts = counts if counts is not None else [0] * len(BUCKETS)

    def add(self, other: "Series") -> None:
        """Add `other`'s totals to these."""
        self.processed += other.processed
        self.failed += other.failed
        self.expired += other.expired
        self.seconds += other.seconds
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    def copy(self) -> "Series":
        """A copy that later jobs do not change."""
        return Series(self.processed, self.failed, self.seconds, list(self.counts), self.expired)


Totals = dict[tuple[str, str], Series]
State = tuple[Totals, int, int]  # totals, busy, concurrency


def supervised() -> str | None:
    """In a child of a -p N supervisor that serves the metrics: the directory this process writes to."""
    return os.environ.get(DIR_ENV) or None


class JobMetrics(ServerMiddleware):
    """The per-job totals of one worker process, and its busy count and concurrency. A sink of tally.Tally (`add`);
    also server middleware on its own (tests, embedders)."""

    per_wrapped = False  # the `job` label is the wire name, a Django task's too (tally.Sink)

    def __init__(
        self,
        queues: "tuple[str, ...]",
        concurrency: int,
        directory: str | None = None,
        known: Callable[[str], bool] = registered,
    ) -> None:
        self.queues = frozenset(queues)
        self.concurrency = concurrency
        self.directory = directory
        self.busy: Callable[[], int] = lambda: 0
        self.known = known
        self.totals: Totals = {}
        self._flusher = Loop(self._flush_step, first_wait=FLUSH_INTERVAL)
        self._path: str | None = None

    def _series(self, job: str, queue: object) -> Series:
        """The series of a tallied job and its payload's queue, bounded to this worker's queues."""
        q = queue if isinstance(queue, str) and queue in self.queues else UNKNOWN
        series = self.totals.get((job, q))
        if series is None:
            series = self.totals[(job, q)] = Series()
        return series

    def add(self, tallied: Tallied) -> None:
        """One finished job, as tally.py decided it."""
        job, queue, failed, seconds, bucket = tallied
        series = self._series(job, queue)
        series.processed += 1
        if failed:
            series.failed += 1
        if seconds is not None and bucket is not None:
            series.seconds += seconds
            series.counts[bucket] += 1  # bucket `le` holds seconds <= le

    def after_process(self, ctx: JobContext) -> None:
        tally.Tally((self,), self.known).after_process(ctx)  # on its own; in a worker the chain's Tally feeds it

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload buried without running (its dead-set entry): processed and failed, no run time."""
        self.add(tally.of_unrunnable(entry, self.known))

    def expire(self, job: str, queue: object) -> None:
        """A job not started by its deadline, never run: expired only."""
        self._series(job, queue).expired += 1

    def state(self) -> State:
        """A copy of the totals, and the gauges now."""
        return {k: s.copy() for k, s in list(self.totals.items())}, self.busy(), self.concurrency

    def start(self, busy: Callable[[], int]) -> None:
        """The process starts taking jobs, `busy()` of them running at a time. In a child of a supervisor, write a
        snapshot into its directory now and every FLUSH_INTERVAL."""
        self.busy = busy
        if self.directory is not None:
            self._path = os.path.join(self.directory, f"{os.getpid()}.json")
            self.flush()
            self._flusher.start()

    def stop(self) -> None:
        """The process stops: a last snapshot, with every job counted."""
        self._flusher.stop()
        if self._path is not None:
            self.flush()

    def _flush_step(self) -> float:
        self.flush()
        return FLUSH_INTERVAL

    def flush(self) -> None:
        """Replace this process's snapshot file (write then rename: a reader sees the old or the new one)."""
        if self._path is None:
            return
        totals, busy, concurrency = self.state()
        try:
            _write(self._path, {"series": _rows(totals), "busy": busy, "concurrency": concurrency})
        except OSError as exc:
            log.warning("metrics: could not write %s: %s", self._path, exc)


class JobCollector(Collector):
    """The job counters, histogram and gauges of `read()`, built on each scrape."""

    def __init__(self, read: Callable[[], State]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        totals, busy, concurrency = self.read()
        processed = CounterMetricFamily("jiggler_jobs_processed", "Jobs finished, failures included.", labels=_LABELS)
        failed = CounterMetricFamily("jiggler_jobs_failed", "Jobs that failed or could not run.", labels=_LABELS)
        expired = CounterMetricFamily("jiggler_jobs_expired", "Jobs not started by their deadline.", labels=_LABELS)
        duration = HistogramMetricFamily(
            "jiggler_job_duration_seconds", "Run time of the jobs that ran.", labels=_LABELS
        )
        for labels, s in sorted(totals.items()):
            processed.add_metric(labels, s.processed)
            failed.add_metric(labels, s.failed)
            expired.add_metric(labels, s.expired)
            cumulative, buckets = 0, []
            for le, count in zip(_LE, s.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            duration.add_metric(labels, buckets, s.seconds)
        yield processed
        yield failed
        yield expired
        yield duration
        yield GaugeMetricFamily("jiggler_busy_workers", "Jobs running now.", value=busy)
        yield GaugeMetricFamily("jiggler_concurrency", "Greenlets running jobs.", value=concurrency)


class Snapshots:
    """The children's snapshot files of a supervisor's directory: their sum, and the folding of exited children."""

    _lock = threading.Lock()  # a scrape never sees a child's totals both in its file and in RETIRED

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def read(self) -> State:
        """The summed totals of every child that ever ran; the gauges of those still running."""
        totals: Totals = {}
        busy = concurrency = 0
        with self._lock:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".json"))
            for name in names:
                snap = _read(os.path.join(self.directory, name))
                _merge(totals, snap.get("series", []))
                busy += snap.get("busy", 0)
                concurrency += snap.get("concurrency", 0)
        return totals, busy, concurrency

    def forget(self, pid: int) -> None:
        """Child `pid` has exited (it writes no more): its totals go to RETIRED, its live gauges go."""
        path = os.path.join(self.directory, f"{pid}.json")
        retired_path = os.path.join(self.directory, RETIRED)
        with self._lock:
            if os.path.exists(path):
                totals: Totals = {}
                _merge(totals, _read(retired_path).get("series", []))
                _merge(totals, _read(path).get("series", []))
                _write(retired_path, {"series": _rows(totals)})
            for leftover in (path, path + ".tmp"):
                if os.path.exists(leftover):
                    os.unlink(leftover)


def _rows(totals: Totals) -> list[list[Any]]:
    return [[job, q, s.processed, s.failed, s.seconds, s.counts, s.expired] for (job, q), s in totals.items()]


def _merge(totals: Totals, rows: list[list[Any]]) -> None:
    for job, q, processed, failed, seconds, counts, expired in rows:
        series = totals.get((job, q))
        if series is None:
            series = totals[(job, q)] = Series()
        series.add(Series(processed, failed, seconds, counts, expired))


def _write(path: str, snapshot: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(snapshot, f)
    os.replace(tmp, path)


def _read(path: str) -> dict[str, Any]:
    """A snapshot file's contents; empty if it is missing or unreadable."""
    try:
        with open(path) as f:
            snap = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("metrics: could not read %s: %s", path, exc)
        return {}
    return snap if isinstance(snap, dict) else {}


class RedisCollector(Collector):
    """Queue, set and process sizes read from Redis on each scrape."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    def _candidates(self, queue: str, rotation: list[str]) -> list[str | None]:
        """waiting.candidates, or nothing when Redis fails meanwhile (the size is still reported)."""
        try:
            return list(waiting.candidates(self.redis, self.keys, queue, rotation))
        except redis.RedisError as exc:
            log.warning("metrics: could not read the oldest jobs of queue %s: %s", queue, exc)
            return []

    def collect(self) -> Iterator[Metric]:
        k = self.keys
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.smembers(k.queues)
                pipe.zcard(k.schedule)
                pipe.zcard(k.retry)
                pipe.zcard(k.dead)
                pipe.smembers(k.processes)
                names, scheduled, retry, dead, identities = pipe.execute()
            queues, processes = sorted(names), sorted(identities)
            with self.redis.pipeline(transaction=False) as pipe:
                for q in queues:
                    pipe.llen(k.queue(q))
                    pipe.lindex(k.queue(q), -1)  # the oldest: clients push on the left, workers pop on the right
                    pipe.zcard(k.prio(q))  # its jobs with a priority
                    pipe.zrange(k.groups(q), 0, -1)  # its groups with jobs waiting ('' is its own list)
                for identity in processes:
                    pipe.hexists(k.process(identity), "info")  # a supervisor's guard record has no info
                replies = pipe.execute()
            grouped = waiting.grouped_sizes(self.redis, k, queues, replies[3 : 4 * len(queues) : 4])
        except redis.RedisError as exc:
            log.warning("metrics: could not read Redis: %s", exc)
            return
        size = GaugeMetricFamily("jiggler_queue_size", "Jobs waiting in each queue.", labels=["queue"])
        latency = GaugeMetricFamily(
            "jiggler_queue_latency_seconds", "Age of the oldest job waiting in each queue.", labels=["queue"]
        )
        now = time.time()
        for i, q in enumerate(queues):
            size.add_metric([q], replies[4 * i] + replies[4 * i + 2] + grouped[i])
            heads = [replies[4 * i + 1]]
            if replies[4 * i + 2] or grouped[i]:  # jobs with a priority or a group wait too: read their oldest
                heads = self._candidates(q, replies[4 * i + 3])
            latency.add_metric([q], max((_age(raw, now) for raw in heads), default=0.0))
        yield size
        yield latency
        yield GaugeMetricFamily("jiggler_scheduled_jobs", "Jobs in the scheduled set.", value=scheduled)
        yield GaugeMetricFamily("jiggler_retry_jobs", "Jobs waiting for a retry.", value=retry)
        yield GaugeMetricFamily("jiggler_dead_jobs", "Jobs in the dead set.", value=dead)
        alive = sum(1 for found in replies[4 * len(queues) :] if found)
        yield GaugeMetricFamily("jiggler_processes", "Worker processes with a live heartbeat.", value=alive)


def _age(raw: str | None, now: float) -> float:
    """Seconds since the payload `raw` was enqueued; 0 for none or one without a readable time."""
    if raw is None:
        return 0.0
    try:
        enqueued = json.loads(raw).get("enqueued_at")
    except (ValueError, AttributeError, RecursionError):
        return 0.0
    return max(0.0, now - enqueued) if isinstance(enqueued, (int, float)) else 0.0


def serve(port: int, host: str, registry: CollectorRegistry) -> None:
    """Serve `registry` at /metrics on `host`:`port`; a greenlet-backed thread once gevent patched. ConfigError
    when it cannot listen there (the port is taken, the address is not this host's)."""
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port} on {host}: cannot listen: {exc.strerror or exc}") from None
    log.info("Prometheus metrics at http://%s:%d/metrics", host, port)


def single_process(
    port: int, host: str, client: redis.Redis, keys: Keys, queues: "tuple[str, ...]", concurrency: int
) -> JobMetrics:
    """One worker process: its metrics, and the server unless a supervisor serves them."""
    directory = supervised()
    metrics = JobMetrics(queues, concurrency, directory)
    if directory is not None:
        return metrics  # snapshots go to the supervisor's directory once started
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobCollector(metrics.state))
    registry.register(RedisCollector(client, keys))
    serve(port, host, registry)
    return metrics


def serve_supervised(port: int, host: str, client: redis.Redis, keys: Keys) -> None:
    """In the supervisor: serve the sum of the children's snapshots and the Redis sizes."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobCollector(Snapshots(os.environ[DIR_ENV]).read))
    registry.register(RedisCollector(client, keys))
    serve(port, host, registry)


def forget_process(pid: int) -> None:
    """A child has exited: its totals stay in the sum, its live gauges go."""
    Snapshots(os.environ[DIR_ENV]).forget(pid)


def remove_multiprocess_dir(path: str) -> None:
    """The supervisor stops: its children's files go."""
    shutil.rmtree(path, ignore_errors=True)
