"""A Sentinel-managed Redis pair for the Sentinel tests: a master, one replica and one sentinel (quorum 1).

Every server is the suite's server binary (tests/redis_servers.py) started by the test on a free loopback port with
its own temporary directory, and stopped afterwards. The sentinel declares the master down after DOWN_AFTER_MS
without an answer, so a failover (the master SIGKILLed, the replica promoted) takes a few seconds. The URL lists a
dead sentinel address first, so clients also show they go on to the next sentinel.
"""

import contextlib
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from jiggler_gevent.demo.local_redis import free_port
from tests.redis_servers import RedisServer, server_binary

MASTER_NAME = "jiggler-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelServer(RedisServer):
    """A server in sentinel mode watching one master."""

    def __init__(self, directory: Path, master: RedisServer) -> None:
        super().__init__(directory)
        # Sentinel rewrites its own file, and takes no `save`/`appendonly` directives: a file of its own.
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {directory}",
            f"logfile {self.log_path}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15) -> "SentinelServer":
        self.proc = subprocess.Popen(
            [server_binary(), str(self.conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the sentinel on port {self.port} did not start")
            time.sleep(0.05)
        return self


class LagProxy:
    """A TCP proxy from the replica to the master that hands the master's replication stream on `delay` seconds
    late: a replica lagging as over a slow network. `cut()` drops what it still holds, as a master host that
    vanishes with writes in flight (on loopback a SIGKILLed master's written bytes are still delivered)."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.cutting = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cutting.is_set():
            try:
                replica, _ = self.listener.accept()
                master = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            self.socks += [replica, master]
            held: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._pump, args=(replica, master), daemon=True).start()
            threading.Thread(target=self._hold, args=(master, held), daemon=True).start()
            threading.Thread(target=self._release, args=(held, replica), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def _hold(self, source: socket.socket, held: "queue.Queue[tuple[float, bytes]]") -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                held.put((time.monotonic() + self.delay, data))

    def _release(self, held: "queue.Queue[tuple[float, bytes]]", sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self.cutting.is_set():
                due, data = held.get()
                self.cutting.wait(max(0.0, due - time.monotonic()))  # the lag itself, not a synchronisation
                if self.cutting.is_set():
                    return
                sink.sendall(data)

    def cut(self) -> None:
        self.cutting.set()
        self.listener.close()
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()


class SentinelPair:
    """A master, its replica and a sentinel; `url` is the redis+sentinel:// URL of DB `db`."""

    def __init__(self, root: Path, password: str | None = None, lag: float = 0.0) -> None:
        (root / "master").mkdir()
        (root / "replica").mkdir()
        (root / "sentinel").mkdir()
        auth = [f"masterauth {password}"] if password else []
        self.master = RedisServer(root / "master", auth, password=password).start()
        self.lag = LagProxy(self.master.port, lag) if lag else None
        upstream = self.lag.port if self.lag else self.master.port
        directives = [f"replicaof 127.0.0.1 {upstream}", *auth]
        self.replica = RedisServer(root / "replica", directives, password=password).start()
        self.sentinel = SentinelServer(root / "sentinel", self.master)
        if password:
            with self.sentinel.conf.open("a") as f:
                f.write(f"sentinel auth-pass {MASTER_NAME} {password}\n")
        self.sentinel.start()
        self.password = password
        self.wait_ready()

    def url_for(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        dead = free_port()  # nothing listens there: clients must go on to the live sentinel
        return f"redis+sentinel://{auth}127.0.0.1:{dead},127.0.0.1:{self.sentinel.port}/{MASTER_NAME}/{db}"

    @property
    def url(self) -> str:
        return self.url_for(0)

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel.port, decode_responses=True, socket_timeout=2)

    def master_port(self) -> int:
        """The port of the master the sentinel names now."""
        _, port = self.sentinel_client().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the replica is in sync and the sentinel knows it (else a failover has nothing to promote).

        The roles are read from the sentinel each time: under load it may fail over once more by itself (a master
        that misses its pings for DOWN_AFTER_MS), and then `master` and `replica` follow what it says."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.master_port() == self.replica.port:
                    self.master, self.replica = self.replica, self.master
                replicas = self.sentinel_client().sentinel_slaves(MASTER_NAME)
                synced = self.replica.client().info("replication").get("master_link_status") == "up"
                if synced and any("s_down" not in r.get("flags", "") for r in replicas):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    "the Sentinel pair did not come up (replica in sync, known to the sentinel): " + self._state()
                )
            time.sleep(0.1)

    def _state(self) -> str:
        """What the sentinel and the replica say, for a failure's message."""
        try:
            replicas = [(r.get("port"), r.get("flags")) for r in self.sentinel_client().sentinel_slaves(MASTER_NAME)]
            link = self.replica.client().info("replication")
            master = self.master_port()
            return f"sentinel's master {master}, its replicas {replicas}; replica {self.replica.port}: {link}"
        except redis.RedisError as exc:
            return f"(could not read the state: {exc})"

    def fail_over(self, timeout: float = 30) -> float:
        """SIGKILL the master and wait until the sentinel has promoted the replica; the seconds that took."""
        old = self.master
        started = time.monotonic()
        old.kill()
        if self.lag is not None:
            self.lag.cut()
        while self.master_port() == old.port:
            if time.monotonic() - started > timeout:
                raise AssertionError("the sentinel did not promote the replica")
            time.sleep(0.05)
        took = time.monotonic() - started
        self.master, self.replica = self.replica, old
        return took

    def rejoin_old_master(self, timeout: float = 60) -> None:
        """Start the killed master again as a replica of the new one (as an operator would; the sentinel alone
        takes several seconds to demote a returning master), and wait until it is in sync."""
        with self.replica.conf.open("a") as f:
            f.write(f"replicaof 127.0.0.1 {self.master.port}\n")
        self.replica.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.kill()


@pytest.fixture
def sentinel_pair() -> Iterator[Callable[..., SentinelPair]]:
    """A factory of Sentinel-managed pairs (`sentinel_pair(password=..., lag=...)`), each stopped and deleted
    after; `lag`: seconds the replica lags behind the master (LagProxy)."""
    pairs: list[SentinelPair] = []
    dirs: list[str] = []

    def make(password: str | None = None, lag: float = 0.0) -> SentinelPair:
        d = tempfile.mkdtemp(prefix="jiggler-sentinel-")
        dirs.append(d)
        pair = SentinelPair(Path(d), password, lag)
        pairs.append(pair)
        return pair

    yield make
    for p in pairs:
        p.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
