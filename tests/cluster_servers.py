"""A private 3-master Redis Cluster for the cluster tests and the cluster benchmark rows.

Three redis-server processes (cluster-enabled yes, a password, each its own temporary directory and free port on
127.0.0.1), joined by `redis-cli --cluster create ... --cluster-yes`, and stopped afterwards. Never the shared
Redis. A missing redis-server or redis-cli fails the run (never a skip).
"""

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jiggler_gevent.demo.local_redis import free_port
from tests.redis_servers import RedisServer

PASSWORD = "cluster-secret"
MASTERS = 3


class Cluster:
    """Three cluster-enabled servers joined into one cluster; `url` is the redis+cluster:// URL of all three."""

    def __init__(self, directory: Path, password: str = PASSWORD) -> None:
        self.dir, self.password = directory, password
        self.servers: list[RedisServer] = []
        for i in range(MASTERS):
            d = directory / f"node{i}"
            d.mkdir()
            # An explicit bus port: the default (port + 10000) fails for the high free ports the OS hands out.
            directives = [
                "cluster-enabled yes",
                f"cluster-config-file {d}/nodes.conf",
                f"cluster-port {free_port()}",
                "cluster-node-timeout 5000",
            ]
            self.servers.append(RedisServer(d, directives, password=password))

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        return f"redis+cluster://:{self.password}@{nodes}"

    def start(self, timeout: float = 30) -> "Cluster":
        """Start the servers, create the cluster and wait until every node says cluster_state:ok."""
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed (apt-get install redis-tools)"
        for s in self.servers:
            s.start()
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [cli, "-a", self.password, "--no-auth-warning", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + timeout
        while not all(self._ok(s) for s in self.servers):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    @staticmethod
    def _ok(server: RedisServer) -> bool:
        c = server.client()
        try:
            info = c.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
            return bool(info.get("cluster_state") == "ok")
        except redis.RedisError:
            return False
        finally:
            c.close()

    def stop(self) -> None:
        for s in self.servers:
            s.kill()


def start_cluster() -> tuple[Cluster, str]:
    """A started cluster and the temporary directory to remove after `cluster.stop()` (for benchmarks)."""
    d = tempfile.mkdtemp(prefix="jiggler-cluster-")
    cluster = Cluster(Path(d))
    try:
        return cluster.start(), d
    except BaseException:
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """The session's 3-master cluster, stopped and deleted at the end."""
    cluster, d = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)
