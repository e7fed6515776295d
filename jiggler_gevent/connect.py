"""From a Redis URL to a client: the one place that knows the URL schemes.

- `redis://`, `rediss://`, `unix://`: one server, as redis-py reads these URLs.
- `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`: the master that Redis Sentinel
  names, found through redis-py's own Sentinel support (redis.sentinel). HOST:PORT are the sentinels; the password
  is the master's (and its replicas'), not the sentinels'. A connection that fails or finds its server demoted to a
  replica asks the sentinels again on reconnect, so clients follow a failover without a restart.
- `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]`: a Redis Cluster (cluster.py).

Every client has a pool that blocks for a free connection instead of failing. redis is imported inside the
functions so that importing the package touches no socket before gevent is patched.

TCP connections to a server (plain and Sentinel URLs) close abortively (SO_LINGER 0): a connection given up on
(a read timeout while the network is cut) discards the commands still in its send buffer instead of delivering
them once the network is back. Without that, a fetch given up on could still run later and move jobs into this
worker's working list that nothing here runs.
"""

import logging
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .cluster import cluster_client, is_cluster_url, parse_cluster_url

if TYPE_CHECKING:
    import redis
    from redis.retry import Retry

log = logging.getLogger("jiggler_gevent.connect")

# Blocking commands and the socket timeout, the rule: every connection gives up on a reply after SOCKET_TIMEOUT
# (so a cut network is noticed), and no command blocks longer than MAX_BLOCK, well inside it. BLMOVE, BZPOPMIN,
# BLPOP and WAIT block for at most block_for(left) seconds; a longer wait (a limiter's wait_timeout,
# Job.result(timeout), wait_replicas' wait_timeout) is a loop of such blocks until its deadline. Pub/sub reads (the
# cancel listener) are the one exception: redis-py reads a subscription without a timeout.
SOCKET_TIMEOUT = 5.0
MAX_BLOCK = 2.0

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_TIMEOUT = 2.0  # seconds a sentinel may take to answer before the next one is asked
FAILOVER_RETRIES = 8  # back-off 0.2, 0.4, 0.8, then 1 s: a command waits about 6 s for a reachable master


@dataclass(frozen=True)
class SentinelTarget:
    """What a redis+sentinel:// URL names: the sentinels, the master's name, the DB and the master's credentials."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def pool_options(max_connections: int) -> dict[str, Any]:
    """The options every pool gets, whatever the scheme."""
    return {
        "max_connections": max_connections,
        "timeout": 20,
        "socket_timeout": SOCKET_TIMEOUT,  # ours, whatever redis-py's default is
        "decode_responses": True,
        # Bytes that are not UTF-8 (a foreign producer's payload) must not kill the fetcher: they decode
        # to lone surrogates, and payload.wire() turns them back into the same bytes.
        "encoding_errors": "surrogateescape",
        "health_check_interval": 30,
        "socket_keepalive": True,
        **no_client_setinfo(),
    }


def no_client_setinfo() -> dict[str, Any]:
    """Client options that stop redis-py sending CLIENT SETINFO on each new connection.

    A round trip saved per connection, and one ACL rule for Redis 7.0 (which has no such command) and for Valkey and
    Redis 7.2+ (which refuse it to a user not granted +client|setinfo, and log each refusal).
    """
    try:
        import redis.driver_info  # noqa: F401  (redis-py 8.2+: the metadata is one driver_info option)
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": None}


def server_and_version(info: dict[str, Any]) -> tuple[str, str]:
    """("Valkey", "9.1.2") or ("Redis", "7.0.15") from a server's INFO: Valkey also reports a redis_version (7.2.4,
    for its clients' sake), so its own name and version come from valkey_version."""
    if "valkey_version" in info:
        return "Valkey", str(info["valkey_version"])
    return "Redis", str(info.get("redis_version", "?"))


def block_for(left: float) -> float:
    """Seconds the next blocking command of a wait with `left` seconds to go may block: at most MAX_BLOCK, and
    never 0 (which Redis reads as "forever")."""
    return max(0.01, min(left, MAX_BLOCK))


def client_for(url: str, max_connections: int) -> "redis.Redis":
    """A new client for `url` whose pool holds up to `max_connections` connections."""
    if is_sentinel(url):
        return sentinel_client(parse_sentinel_url(url), max_connections)
    if is_cluster_url(url):
        return cluster_client(url, **pool_options(max_connections))
    return plain_client(url, max_connections)


def check_url(url: str) -> None:
    """Raise ValueError if `url` is not a Redis URL this module can connect to."""
    if is_sentinel(url):
        parse_sentinel_url(url)
        return
    if is_cluster_url(url):
        parse_cluster_url(url)
        return
    from redis.connection import parse_url

    parse_url(url)


def is_sentinel(url: str) -> bool:
    """Whether `url` goes through Redis Sentinel."""
    return url.lower().startswith(SENTINEL_SCHEME)


def plain_client(url: str, max_connections: int) -> "redis.Redis":
    """A client of the one server a redis://, rediss:// or unix:// URL names."""
    import redis

    options = pool_options(max_connections)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        base = redis.SSLConnection if scheme == "rediss" else redis.Connection
        options["connection_class"] = _abortive(base)
    pool = redis.BlockingConnectionPool.from_url(url, **options)
    return redis.Redis(connection_pool=pool)


def _abortive(base: type) -> type:
    """`base`, a redis-py connection class, with SO_LINGER 0 on its TCP socket (see the module's docstring)."""
    made = _abortive_classes.get(base)
    if made is None:

        def _connect(self: Any) -> socket.socket:
            sock: socket.socket = base._connect(self)  # type: ignore[attr-defined]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            return sock

        made = _abortive_classes[base] = type(f"Abortive{base.__name__}", (base,), {"_connect": _connect})
    return made


def sentinel_client(target: SentinelTarget, max_connections: int) -> "redis.Redis":
    """A client of the master the sentinels of `target` name; it follows their failovers."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    # A sentinel that does not answer is skipped for the next one at once: no retries with back-off on it.
    sentinel_options = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    options = pool_options(max_connections)
    options.update(db=target.db, username=target.username, password=target.password, retry=_failover_retry())
    options["connection_class"] = _sentinel_connection_class()
    client: redis.Redis = sentinel.master_for(
        target.master, connection_pool_class=_blocking_sentinel_pool_class(), **options
    )
    return client


def _failover_retry() -> "Retry":
    """redis-py's retry of a command whose connection failed, stretched so that it outlasts the moment, right
    after a failover, when the sentinels still describe the old master (about 6 s)."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=FAILOVER_RETRIES)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a redis+sentinel:// URL; ValueError says what is wrong with it."""
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME} URL")
    rest = url[len(SENTINEL_SCHEME) :].split("?", 1)[0]
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username, password = _credentials(credentials)
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    if not sentinels:
        raise ValueError("a redis+sentinel:// URL names at least one sentinel HOST:PORT")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("a redis+sentinel:// URL ends in /MASTER_NAME or /MASTER_NAME/DB")
    db = _db(parts[1]) if len(parts) == 2 else 0
    return SentinelTarget(sentinels, parts[0], db, username, password)


def _credentials(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, colon, password = text.partition(":")
    if not colon:
        return None, unquote(user)
    return unquote(user) or None, unquote(password)


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"sentinel address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"database {text!r} is not a number")
    return int(text)


def _blocking_sentinel_pool_class() -> type:
    """redis-py's Sentinel pool, made to wait for a free connection like the BlockingConnectionPool of plain URLs."""
    import redis
    from redis.sentinel import SentinelConnectionPool

    global _BlockingSentinelPool
    if _BlockingSentinelPool is None:
        # The MRO runs SentinelConnectionPool's master tracking over BlockingConnectionPool's queue.
        _BlockingSentinelPool = type("BlockingSentinelPool", (SentinelConnectionPool, redis.BlockingConnectionPool), {})
    return _BlockingSentinelPool


def _sentinel_connection_class() -> type:
    """redis-py's SentinelManagedConnection, made to ask the sentinels where the master is on every reconnect.

    redis-py 8.1 reconnects a connection kept outside the pool (a single_connection_client such as the fetcher's
    and the Acker's) with connect_check_health(), which skips SentinelManagedConnection.connect() and so dials
    the old master forever; connect() resolves the master first.
    """
    from redis.sentinel import SentinelManagedConnection

    global _SentinelConnection
    if _SentinelConnection is None:

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
            if not self._sock:
                self.connect()
            SentinelManagedConnection.send_packed_command(self, command, check_health)

        def connect(self: Any) -> None:
            SentinelManagedConnection.connect(self)
            _note_master(self.connection_pool.service_name, self.host, self.port)

        namespace = {"send_packed_command": send_packed_command, "connect": connect}
        base = _abortive(SentinelManagedConnection)
        _SentinelConnection = type("FollowingSentinelConnection", (base,), namespace)
    return _SentinelConnection


def _note_master(service: str, host: str, port: int) -> None:
    """Log, once per process and failover, that the master of `service` has moved (a line for each outage)."""
    previous = _masters.get(service)
    _masters[service] = (host, port)
    if previous is not None and previous != (host, port):
        log.warning("Redis Sentinel failover: master %r moved from %s:%d to %s:%d", service, *previous, host, port)


LINGER_ABORT = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}: close with RST
_abortive_classes: dict[type, type] = {}
_BlockingSentinelPool: type | None = None
_SentinelConnection: type | None = None
_masters: dict[str, tuple[str, int]] = {}  # the master address each Sentinel service last had in this process
