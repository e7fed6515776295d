"""Redis Cluster: `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]`, through redis-py's RedisCluster.

Every key of a namespace carries the hash tag `{NS}` (config.Config.keys), so the whole namespace lives in one
hash slot, on one master: each Lua script, MULTI pipeline and blocking read touches one node, exactly as on a
plain Redis. The nodes listed are only where discovery starts; the client learns the rest and follows MOVED and
ASK replies, reconnecting and retrying as redis-py does.

The worker's fetcher and acknowledger send their commands through slot_client(): one connection of their own to
the master of the namespace's slot, as on a plain Redis. RedisCluster works out each command's slot and node in
Python and checks a connection out of the node's pool per command (a non-blocking read of the socket each time):
about 40 µs of CPU per round trip, which a fetch of 10 jobs paid once per batch. A slot client sends a command
that meets a redirection or a connection error through the RedisCluster instead (which follows it, refreshes its
slot map and retries, as before), then moves its own connection to the slot's master as the RedisCluster now
knows it.

redis is imported inside the functions, as in config.py: importing this module touches no socket.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

if TYPE_CHECKING:
    import redis

SCHEME = "redis+cluster://"


@dataclass(frozen=True)
class ClusterTarget:
    """What a `redis+cluster://` URL says: the startup nodes and the credentials."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    """True for a `redis+cluster://` URL."""
    return url.lower().startswith(SCHEME)


def parse_cluster_url(url: str) -> ClusterTarget:
    """The nodes and credentials of a `redis+cluster://` URL; ValueError (never naming the password) if malformed."""
    if not is_cluster_url(url):
        raise ValueError(f"a Redis Cluster URL starts with {SCHEME}")
    rest = url[len(SCHEME) :].split("/", 1)[0].split("?", 1)[0]
    auth, _, hosts = rest.rpartition("@")
    username = password = None
    if auth:
        user, sep, secret = auth.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if sep else (None, unquote(user))
    nodes = tuple(_node(item) for item in hosts.split(","))
    return ClusterTarget(nodes, username, password)


def _node(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"each node of a Redis Cluster URL is HOST:PORT, not {item.strip()!r}")
    return host.strip("[]"), int(port)


def cluster_client(url: str, **pool_options: Any) -> "redis.Redis":
    """A RedisCluster for `url`; `pool_options` (max_connections, timeout, decode_responses, ...) go to each
    node's BlockingConnectionPool.

    Typed as redis.Redis: RedisCluster offers the same commands, scripts, pipelines and pub/sub for keys of one
    slot (all jiggler_gevent uses), without being a subclass.
    """
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    target = parse_cluster_url(url)
    (host, port), others = target.nodes[0], target.nodes[1:]
    # Only the url= form gives each node the pool class asked for; the other startup nodes come beside it.
    client = RedisCluster(
        url=f"redis://{host}:{port}",
        startup_nodes=[ClusterNode(h, p) for h, p in others],
        username=target.username,
        password=target.password,
        connection_pool_class=redis.BlockingConnectionPool,
        **pool_options,
    )
    return cast("redis.Redis", client)


def slot_client(cluster: "redis.Redis", key: str) -> "redis.Redis":
    """A client with one connection of its own to the master holding `key`'s slot of the RedisCluster `cluster`
    (for the commands of one greenlet at a time, on keys of that one slot); see the module's docstring."""
    client: redis.Redis = _slot_client_class()(cluster, key)
    return client


def _slot_client_class() -> type:
    """The class of slot_client(), made on first use (redis is imported inside the functions)."""
    global _SlotClient
    if _SlotClient is not None:
        return _SlotClient
    import redis
    from redis import exceptions

    # Replies after which the command is sent again through the RedisCluster: a redirection (nothing was run) or a
    # connection lost (what RedisCluster itself retries; the plain-Redis path retries it the same way).
    follow: tuple[type[Exception], ...] = (exceptions.AskError, exceptions.TryAgainError, exceptions.ClusterDownError)
    follow += (exceptions.ConnectionError, exceptions.TimeoutError)

    class SlotClient(redis.Redis):
        # Guarantee: every command runs on the master of the slot, once per call of execute_command as the
        # RedisCluster would run it: on our connection, or (after a redirection or a connection error there) through
        # the RedisCluster, whose own retries then apply; the connection is only ever swapped between two commands.
        def __init__(self, cluster: Any, key: str) -> None:
            self.router: Any = cluster  # the RedisCluster (Redis.cluster is a command)
            self.key = key
            super().__init__(connection_pool=self._master_pool(), single_connection_client=True)

        def _master_pool(self) -> Any:
            node = self.router.get_node_from_key(self.key)
            return self.router.get_redis_connection(node).connection_pool

        def execute_command(self, *args: Any, **options: Any) -> Any:
            try:
                return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            except follow:
                self._drop_connection()
            result = self.router.execute_command(*args, **options)
            self.connection_pool = self._master_pool()
            self.connection = self.connection_pool.get_connection()
            return result

        def _drop_connection(self) -> None:
            conn, self.connection = self.connection, None
            if conn is not None:
                conn.disconnect()  # type: ignore[no-untyped-call]
                self.connection_pool.release(conn)

    _SlotClient = SlotClient
    return _SlotClient


def is_cluster(client: object) -> bool:
    """True when `client` is a RedisCluster (it has no single connection pool to borrow from)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def hash_tagged(namespace: str) -> str:
    """The namespace as its keys carry it on a Cluster: `{NS}`, so they all hash to one slot (kept as it is
    when it holds a tag already)."""
    return namespace if "{" in namespace else "{" + namespace + "}"


_SlotClient: type | None = None
