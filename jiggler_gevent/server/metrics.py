"""Prometheus metrics of a worker (`--metrics-port PORT`): per-job counts and run times, and Redis sizes on scrape.

Imported only when --metrics-port is given, so nothing of prometheus_client is loaded otherwise.
`JobMetrics` is server middleware (outermost in the chain): every finished job counts in
`jiggler_jobs_processed_total{job,queue}`, failures also in `jiggler_jobs_failed_total`, as in Sidekiq; a job that
ran observes `jiggler_job_duration_seconds`; a payload that could not run (unknown name, bad arguments, not a
payload) counts as processed and failed. The `job` label is the wire name of a job registered in this worker, else
"unknown"; the `queue` label one of the worker's queues, else "unknown": a flood of odd payloads makes one series.
`RedisCollector` reads the queue sizes and latencies, the scheduled, retry and dead set sizes and the live
processes in two round trips per scrape (keys.py directly: the server never loads the admin side).

One process serves /metrics itself (`serve`). With -p N the supervisor names a directory in MULTIPROC_ENV before
it forks and before anything imports prometheus_client (which picks its value class when imported): each child
writes its values to files there (prometheus_client's multiprocess mode, no server of its own),
and the supervisor serves the sum (`serve_supervised`). A dead child's counter files stay, so totals never go
down when a child is replaced; its live gauges (busy, concurrency) are dropped by `forget_process`.
"""

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ..job import lookup
from ..keys import Keys
from ..middleware import Disposition, JobContext, ServerMiddleware

log = logging.getLogger("jiggler_gevent.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISED_ENV = "JIGGLER_METRICS_SUPERVISED"  # set by the supervisor: its children write files, serve nothing
UNKNOWN = "unknown"
# From a few milliseconds to half an hour: jobs range from cache refreshes to reports.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


def supervised() -> bool:
    """True in a child of a -p N supervisor that serves the metrics: this process only writes its values."""
    return bool(os.environ.get(SUPERVISED_ENV))


class JobMetrics(ServerMiddleware):
    """The per-job counters and histogram, the busy and concurrency gauges of one worker process."""

    def __init__(
        self,
        queues: "tuple[str, ...]",
        concurrency: int,
        registry: CollectorRegistry | None = None,
        known: Callable[[str], bool] = lambda name: lookup(name) is not None,
    ) -> None:
        labels = ("job", "queue")
        self.processed = Counter(
            "jiggler_jobs_processed", "Jobs finished, failures included.", labels, registry=registry
        )
        self.failed = Counter("jiggler_jobs_failed", "Jobs that failed or could not run.", labels, registry=registry)
        self.duration = Histogram(
            "jiggler_job_duration_seconds", "Run time of the jobs that ran.", labels, registry=registry, buckets=BUCKETS
        )
        self.busy = Gauge("jiggler_busy_workers", "Jobs running now.", registry=registry, multiprocess_mode="livesum")
        self.concurrency = Gauge(
            "jiggler_concurrency", "Greenlets running jobs.", registry=registry, multiprocess_mode="livesum"
        )
        self.concurrency.set(concurrency)
        self.queues = frozenset(queues)
        self.known = known
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def _children(self, name: object, queue: object) -> tuple[Any, Any, Any]:
        """The (processed, failed, duration) series of a job name and queue, bounded to known ones."""
        key = (cast(str, name), cast(str, queue))
        series = self._series.get(key)
        if series is None:
            job = name if isinstance(name, str) and self.known(name) else UNKNOWN
            q = queue if isinstance(queue, str) and queue in self.queues else UNKNOWN
            series = (self.processed.labels(job, q), self.failed.labels(job, q), self.duration.labels(job, q))
            if len(self._series) < 10_000:  # the cache is bounded too: odd names are looked up each time
                self._series[key] = series
        return series

    def before_process(self, ctx: JobContext) -> None:
        self.busy.inc()

    def after_process(self, ctx: JobContext) -> None:
        self.busy.dec()
        if ctx.disposition == Disposition.RESCHEDULE:  # over a limit: not run, put back (as Counters)
            return
        processed, failed, duration = self._children(ctx.payload.get("name"), ctx.payload.get("queue"))
        processed.inc()
        if ctx.exception is not None:
            failed.inc()
        duration.observe(max(0.0, time.time() - ctx.started_at))

    def unrunnable(self, entry: dict[str, Any]) -> None:
        """A payload buried without running (its dead-set entry): processed and failed, no run time."""
        processed, failed, _ = self._children(entry.get("name"), entry.get("queue"))
        processed.inc()
        failed.inc()


class RedisCollector(Collector):
    """Queue, set and process sizes read from Redis on each scrape."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

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
                for identity in processes:
                    pipe.hexists(k.process(identity), "info")  # a supervisor's guard record has no info
                replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: could not read Redis: %s", exc)
            return
        size = GaugeMetricFamily("jiggler_queue_size", "Jobs waiting in each queue.", labels=["queue"])
        latency = GaugeMetricFamily(
            "jiggler_queue_latency_seconds", "Age of the oldest job waiting in each queue.", labels=["queue"]
        )
        now = time.time()
        for i, q in enumerate(queues):
            size.add_metric([q], replies[2 * i])
            latency.add_metric([q], _age(replies[2 * i + 1], now))
        yield size
        yield latency
        yield GaugeMetricFamily("jiggler_scheduled_jobs", "Jobs in the scheduled set.", value=scheduled)
        yield GaugeMetricFamily("jiggler_retry_jobs", "Jobs waiting for a retry.", value=retry)
        yield GaugeMetricFamily("jiggler_dead_jobs", "Jobs in the dead set.", value=dead)
        alive = sum(1 for found in replies[2 * len(queues) :] if found)
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


def serve(port: int, registry: CollectorRegistry) -> None:
    """Serve `registry` at /metrics on `port` (all interfaces); a greenlet-backed thread once gevent patched."""
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen: {exc}") from None
    log.info("Prometheus metrics at http://0.0.0.0:%d/metrics", port)


def single_process(
    port: int, client: redis.Redis, keys: Keys, queues: "tuple[str, ...]", concurrency: int
) -> JobMetrics:
    """One worker process: its metrics, and the server unless a supervisor serves them."""
    if supervised():
        return JobMetrics(queues, concurrency)  # values go to the supervisor's directory
    registry = CollectorRegistry(auto_describe=True)
    metrics = JobMetrics(queues, concurrency, registry)
    registry.register(RedisCollector(client, keys))
    serve(port, registry)
    return metrics


def serve_supervised(port: int, client: redis.Redis, keys: Keys) -> None:
    """In the supervisor: serve the sum of the children's values and the Redis sizes."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry(auto_describe=True)
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(RedisCollector(client, keys))
    serve(port, registry)


def forget_process(pid: int) -> None:
    """A child has exited: drop its live gauges (its counters stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_multiprocess_dir(path: str) -> None:
    """The supervisor stops: its children's files go."""
    shutil.rmtree(path, ignore_errors=True)
