"""A private Redis for the demo and the test suite, when none answers at the configured URL.

`ensure_redis(url)` returns a URL that answers: `url` itself when Redis is there, else (if the
`redis-server` binary is installed) a throwaway server on a free local port, stopped by `stop()`.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import cast

import redis


class NoRedis(RuntimeError):
    """No Redis answers and none could be started."""


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


def start_private(deadline: float = 10.0) -> tuple[str, Callable[[], None]]:
    """Start a throwaway redis-server on a free port; returns (url, stop)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise NoRedis(
            "no Redis answers and redis-server is not installed: "
            "install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or set REDIS_URL"
        )
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
            raise NoRedis(f"redis-server did not start on port {port}")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    return url, stop


def ensure_redis(url: str | None = None) -> tuple[str, Callable[[], None]]:
    """A URL where Redis answers, and a function that stops it if we started it."""
    from ..config import resolve_redis_url

    url = resolve_redis_url(url)
    if answers(url):
        return url, lambda: None
    return start_private()
