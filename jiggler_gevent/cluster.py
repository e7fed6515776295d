"""Redis Cluster: `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]`, through redis-py's RedisCluster.

Every key of a namespace carries the hash tag `{NS}` (config.Config.keys), so the whole namespace lives in one
hash slot, on one master: each Lua script, MULTI pipeline and blocking read touches one node, exactly as on a
plain Redis. The nodes listed are only where discovery starts; the client learns the rest and follows MOVED and
ASK replies, reconnecting and retrying as redis-py does (nothing more is added here).

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


def is_cluster(client: object) -> bool:
    """True when `client` is a RedisCluster (it has no single connection pool to borrow from)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def hash_tagged(namespace: str) -> str:
    """The namespace as its keys carry it on a Cluster: `{NS}`, so they all hash to one slot (kept as it is
    when it holds a tag already)."""
    return namespace if "{" in namespace else "{" + namespace + "}"
