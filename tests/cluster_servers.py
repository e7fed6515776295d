"""A private 3-master Redis Cluster for the cluster tests and the cluster benchmark rows.

Three of the suite's servers (tests/redis_servers.py: cluster-enabled yes, a password, each its own temporary directory
and free port on 127.0.0.1), joined as `redis-cli --cluster create` would, with plain commands (each node takes a
third of the slots with CLUSTER ADDSLOTSRANGE, then meets the first), so no cli binary is needed; stopped afterwards.
Never the shared Redis. A missing server binary fails the run (never a skip).
"""

import shutil
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
SLOTS = 16384


class Cluster:
    """Three cluster-enabled servers joined into one cluster; `url` is the redis+cluster:// URL of all three."""

    def __init__(self, directory: Path, password: str = PASSWORD) -> None:
        self.dir, self.password = directory, password
        self.servers: list[RedisServer] = []
        self.bus_ports: list[int] = []
        for i in range(MASTERS):
            d = directory / f"node{i}"
            d.mkdir()
            # An explicit bus port: the default (port + 10000) fails for the high free ports the OS hands out.
            bus_port = free_port()
            self.bus_ports.append(bus_port)
            directives = [
                "cluster-enabled yes",
                f"cluster-config-file {d}/nodes.conf",
                f"cluster-port {bus_port}",
                "cluster-node-timeout 5000",
            ]
            self.servers.append(RedisServer(d, directives, password=password))

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        return f"redis+cluster://:{self.password}@{nodes}"

    def start(self, timeout: float = 30) -> "Cluster":
        """Start the servers, create the cluster and wait until every node says cluster_state:ok."""
        for s in self.servers:
            s.start()
        self._join()
        deadline = time.monotonic() + timeout
        while not all(self._ok(s) for s in self.servers):
            if time.monotonic() > deadline:
                raise AssertionError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def _join(self) -> None:
        """Give each node a contiguous third of the 16384 slots, then make every node meet the first."""
        first, first_bus = self.servers[0], self.bus_ports[0]
        for i, server in enumerate(self.servers):
            low, high = i * SLOTS // MASTERS, (i + 1) * SLOTS // MASTERS - 1
            c = server.client()
            try:
                c.execute_command("CLUSTER ADDSLOTSRANGE", low, high)
                if i > 0:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", first.port, first_bus)
            finally:
                c.close()

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
