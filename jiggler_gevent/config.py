"""Settings, their defaults, and the Redis connection they lead to.

The Redis URL is looked up in this order, first match wins: an explicit `redis_url`, then the
environment variables JIGGLER_REDIS_URL and REDIS_URL, then redis://localhost:6379/0.
`configure()` may be called again; clients and workers created after a call use the new settings.
"""

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

from .cluster import hash_tagged, is_cluster_url
from .connect import client_for
from .keys import Keys, SidekiqKeys

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "jiggler"
DEFAULT_QUEUE = "default"
DEFAULT_WIRE = "jiggler"
WIRES = ("jiggler", "sidekiq")  # payload formats and key layouts: ours, or Sidekiq's (wire/sidekiq.py)
DEFAULT_RETRIES = 25
DEFAULT_CONCURRENCY = 10
DEFAULT_SHUTDOWN_TIMEOUT = 25.0
DEFAULT_PREEMPT = 0.1
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_WAIT_TIMEOUT = 1.0  # seconds a push waits for `wait_replicas` replicas to acknowledge it
HEARTBEAT_TTL_BEATS = 12  # a process is presumed dead after 12 missed beats: 60 s at the default 5 s
DEAD_MAX_JOBS = 10_000
DEAD_MAX_AGE = 180 * 24 * 3600
# Which deaths count against a job (server/recovery.py has the rule): a job held by MAX_RECOVERIES + 1 processes as
# they died is buried once BLAMED_DEATHS of those deaths were blamed on it; one held at SUSPECT_DEATHS deaths runs
# alone from then on (the worker that takes it runs nothing else meanwhile). A death alone is blamed unless another
# process died holding several jobs within BLAME_WINDOW_BEATS heartbeat intervals before it was recovered.
MAX_RECOVERIES = 3
SUSPECT_DEATHS = 2
BLAMED_DEATHS = 2
BLAME_WINDOW_BEATS = 2 * HEARTBEAT_TTL_BEATS
RESULT_PENDING_TTL = 30 * 24 * 3600  # a tracked job's status lives this long while it waits or runs
ITERATION_TTL = 30 * 24 * 3600  # an unfinished iterable job's cursor outlives its last write this long (retries wait)
PROGRESS_TTL = 24 * 3600  # a job's progress, and a finished iterable job's last cursor, are kept this long
CHECKPOINT_EVERY = 5.0  # seconds: a running iterable job's cursor is stored at least this often
CANCEL_KEEP = 7 * 24 * 3600  # a cancellation is remembered this long (NS:cancelled)
BATCH_TTL = 30 * 24 * 3600  # a batch's data expires this long after its last change (its success, at the latest)
JOB_METRICS_TTL = 8 * 3600  # per-job metrics (NS:metrics:<minute>) are kept this long after their minute
# Run-time histogram of the per-job metrics: bucket upper bounds in seconds, from a few milliseconds to half an
# hour (jobs range from cache refreshes to reports); one more bucket counts what ran longer than the last.
JOB_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Their field suffixes in NS:metrics:<minute> (see keys.py): the bound in ms, "hinf" for the overflow bucket.
JOB_TIME_FIELDS = (*(f"h{round(b * 1000)}" for b in JOB_TIME_BUCKETS), "hinf")
# what a job has in each minute's hash, added up ("expired": not started by its deadline, never run)
JOB_METRIC_FIELDS = ("runs", "failed", "ms", "expired", *JOB_TIME_FIELDS)
JOB_MAX_FIELD = "max_us"  # and its longest run that minute (whole microseconds): a maximum, to bound percentiles


def given_redis_url(explicit: str | None = None) -> str | None:
    """The URL the user named, by the lookup order: explicit, JIGGLER_REDIS_URL, REDIS_URL; None when none."""
    return explicit or os.environ.get("JIGGLER_REDIS_URL") or os.environ.get("REDIS_URL") or None


def resolve_redis_url(explicit: str | None = None) -> str:
    """Apply the lookup order: the URL the user named (given_redis_url), else the local default."""
    return given_redis_url(explicit) or DEFAULT_REDIS_URL


@dataclass(frozen=True)
class Config:
    """Where Redis is and which namespace to use; `extra` carries worker options set by `configure`."""

    redis_url: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return resolve_redis_url(self.redis_url)

    @property
    def keys(self) -> Keys:
        """The key names of the namespace; on a Redis Cluster they carry the hash tag {NS} (one slot for all)."""
        if self.wire == "sidekiq":
            return sidekiq_keys(self.namespace)
        if is_cluster_url(self.url):
            return Keys(hash_tagged(self.namespace))
        return Keys(self.namespace)

    @property
    def wire(self) -> str:
        """The payload format and key layout: "jiggler" (default) or "sidekiq" (`configure(wire=...)`)."""
        return str(self.extra.get("wire") or DEFAULT_WIRE)


def sidekiq_keys(namespace: str) -> SidekiqKeys:
    """Sidekiq's layout: its keys bare, unless a namespace other than the default was given (then under it)."""
    return SidekiqKeys(namespace, prefix="" if namespace == DEFAULT_NAMESPACE else f"{namespace}:")


_current = Config()
_clients: dict[str, Any] = {}
_pool_size = 50


def configure(redis_url: str | None = None, namespace: str | None = None, **extra: Any) -> Config:
    """Set the Redis URL, the namespace and worker options (`concurrency`, `preempt`, ...) for this process;
    `wire="sidekiq"` switches payloads and keys to Sidekiq's format (default "jiggler"); `wait_replicas=N`
    (and `wait_timeout` seconds, default 1.0) makes each push wait until N replicas have it (client.durability)."""
    global _current
    if "wire" in extra and extra["wire"] not in WIRES:
        raise ValueError(f"wire must be one of {', '.join(WIRES)}, not {extra['wire']!r}")
    changes: dict[str, Any] = {}
    if redis_url is not None:
        changes["redis_url"] = redis_url
    if namespace is not None:
        changes["namespace"] = namespace
    if extra:
        changes["extra"] = {**_current.extra, **extra}
    _current = replace(_current, **changes)
    return _current


def current() -> Config:
    """The settings in force now."""
    return _current


def reset() -> None:
    """Forget every `configure()` call (tests use it)."""
    global _current
    _current = Config()


def set_pool_size(connections: int) -> None:
    """Size the connection pool of every Redis client made from now on (the worker: concurrency + 10).

    The worker calls it before it imports the user's modules, so that jobs that enqueue share the one pool.
    """
    global _pool_size
    if connections != _pool_size:
        _pool_size = connections
        _clients.clear()


def redis_client(url: str | None = None) -> "redis.Redis":
    """The shared client for `url` (default: the configured one); one pool per URL in a process.

    The pool blocks for a free connection instead of failing, so it can be sized for the concurrency.
    connect.py builds it (and knows the URL schemes); it imports redis only when called, so that importing
    the package touches no socket before gevent is patched (BlockingConnectionPool picks its queue class
    when redis is imported).
    """
    url = url or _current.url
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = client_for(url, _pool_size)
    return client


def redacted(url: str) -> str:
    """`url` with any password replaced by ***, for logs and stats."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    hosts = parts.netloc.rpartition("@")[2]  # a redis+sentinel:// URL lists several HOST:PORT
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
