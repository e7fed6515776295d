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

from .keys import Keys

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "jiggler"
DEFAULT_QUEUE = "default"
DEFAULT_RETRIES = 25
DEFAULT_CONCURRENCY = 10
DEFAULT_SHUTDOWN_TIMEOUT = 25.0
DEFAULT_PREEMPT = 0.1
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TTL_BEATS = 12  # a process is presumed dead after 12 missed beats: 60 s at the default 5 s
DEAD_MAX_JOBS = 10_000
DEAD_MAX_AGE = 180 * 24 * 3600
MAX_RECOVERIES = 3
RESULT_PENDING_TTL = 30 * 24 * 3600  # a tracked job's status lives this long while it waits or runs
CANCEL_KEEP = 7 * 24 * 3600  # a cancellation is remembered this long (NS:cancelled)
BATCH_TTL = 30 * 24 * 3600  # a batch's data expires this long after its last change (its success, at the latest)


def resolve_redis_url(explicit: str | None = None) -> str:
    """Apply the lookup order: explicit, JIGGLER_REDIS_URL, REDIS_URL, the local default."""
    return explicit or os.environ.get("JIGGLER_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


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
        return Keys(self.namespace)


_current = Config()
_clients: dict[str, Any] = {}
_pool_size = 50


def configure(redis_url: str | None = None, namespace: str | None = None, **extra: Any) -> Config:
    """Set the Redis URL, the namespace and worker options (`concurrency`, `preempt`, ...) for this process."""
    global _current
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
    redis is imported here, not at the top, so that importing the package touches no socket before
    gevent is patched (BlockingConnectionPool picks its queue class when redis is imported).
    """
    import redis

    url = url or current().url
    client = _clients.get(url)
    if client is None:
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=_pool_size,
            timeout=20,
            decode_responses=True,
            # Bytes that are not UTF-8 (a foreign producer's payload) must not kill the fetcher: they decode
            # to lone surrogates, and payload.wire() turns them back into the same bytes.
            encoding_errors="surrogateescape",
            health_check_interval=30,
            socket_keepalive=True,
        )
        client = _clients[url] = redis.Redis(connection_pool=pool)
    return client


def redacted(url: str) -> str:
    """`url` with any password replaced by ***, for logs and stats."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
