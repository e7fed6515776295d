"""Drive real Ruby Sidekiq (Debian's ruby-sidekiq 6.4) from the tests: snippets, a `sidekiq` process, the Web UI.

Needs `ruby`, the sidekiq gem and a Rack server (thin, else WEBrick): `apt-get install ruby-sidekiq thin`.
`require_ruby_sidekiq()` fails the test (never a skip) when they are missing.

Sidekiq has no namespaces, so a test owns a whole Redis database: `claimed_db(redis_url)` picks one of the
databases 8..15 of the test Redis, claims it with the key `sidekiq-harness:claim` (SET NX with an expiry, so
concurrent test runs never share one), empties it, and flushes it again when the test ends.

Everything Ruby runs is configured (client and server) to the Redis URL given, database number included.
"""

import http.cookiejar
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import redis

from jiggler_gevent.demo.local_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "apt-get install ruby-sidekiq thin"
CLAIM_KEY = "sidekiq-harness:claim"
CLAIM_DBS = range(8, 16)

# Prepended to every Ruby program: Sidekiq (client and server) on the URL in $SIDEKIQ_HARNESS_REDIS_URL.
PRELUDE = """\
require "sidekiq"
require "sidekiq/api"
$stdout.sync = true
Sidekiq.configure_client { |c| c.redis = { url: ENV.fetch("SIDEKIQ_HARNESS_REDIS_URL") } }
Sidekiq.configure_server { |c| c.redis = { url: ENV.fetch("SIDEKIQ_HARNESS_REDIS_URL") } }
"""

WEB_APP = """\
require "sidekiq/web"
require "rack/session/cookie"
require "securerandom"
app = Rack::Builder.new do
  use Rack::Session::Cookie, secret: SecureRandom.hex(64), same_site: true, max_age: 86400
  run Sidekiq::Web
end
host, port = "127.0.0.1", Integer(ENV.fetch("SIDEKIQ_HARNESS_PORT"))
begin
  require "thin"
  require "rack/handler/thin"
  Rack::Handler::Thin.run(app, Host: host, Port: port)
rescue LoadError
  require "webrick"
  require "rack/handler/webrick"
  Rack::Handler::WEBrick.run(app, Host: host, Port: port, AccessLog: [])
end
"""


def ruby_available() -> str | None:
    """None when ruby and the sidekiq gem are usable, else why not (with the install hint)."""
    if shutil.which("ruby") is None or shutil.which("sidekiq") is None:
        return f"ruby and the sidekiq command are needed ({INSTALL_HINT})"
    probe = subprocess.run(
        ["ruby", "-e", 'require "sidekiq"; require "sidekiq/web"; print Sidekiq::VERSION'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return f"the sidekiq gem does not load ({INSTALL_HINT}): {probe.stderr.strip()}"
    return None


def require_ruby_sidekiq() -> None:
    """Fail the calling test (never skip) when ruby or the sidekiq gem is missing."""
    problem = ruby_available()
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def ruby_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a Ruby child: Sidekiq's REDIS_URL and the harness's own variables."""
    return dict(os.environ, REDIS_URL=redis_url, SIDEKIQ_HARNESS_REDIS_URL=redis_url, **extra)


class RubyError(AssertionError):
    """A Ruby program failed; the message carries its exit code, stderr and stdout."""


def run_ruby(redis_url: str, code: str, timeout: float = 60) -> str:
    """Run `code` after `require "sidekiq"` with Sidekiq configured to `redis_url`; returns stdout.

    Raises RubyError with stderr when ruby exits non-zero (or the timeout passes).
    """
    try:
        done = subprocess.run(
            ["ruby", "-"],
            input=PRELUDE + code,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=ruby_env(redis_url),
        )
    except subprocess.TimeoutExpired as exc:
        raise RubyError(f"ruby did not finish in {timeout}s; stderr: {exc.stderr!r}") from exc
    if done.returncode != 0:
        raise RubyError(f"ruby exited {done.returncode}\nstderr:\n{done.stderr}\nstdout:\n{done.stdout}")
    return done.stdout


@contextmanager
def claimed_db(redis_url: str, ttl: int = 600) -> Iterator[str]:
    """A Redis URL on the same server as `redis_url` with a database (8..15) of this test's own, emptied before
    and after; fails when all are claimed by concurrent runs."""
    base = urllib.parse.urlsplit(redis_url)
    token = uuid.uuid4().hex
    for db in CLAIM_DBS:
        url = urllib.parse.urlunsplit(base._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url)
        try:
            if not client.set(CLAIM_KEY, token, nx=True, ex=ttl):
                continue
            for key in client.scan_iter(count=1000):
                if key != CLAIM_KEY.encode():
                    client.delete(key)
            try:
                yield url
            finally:
                client.flushdb()
            return
        finally:
            client.close()
    pytest.fail(f"every Redis database in {list(CLAIM_DBS)} is claimed ({CLAIM_KEY}) by other test runs")


def _deadline_poll(check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; log:\n{log()}")
        time.sleep(0.05)


class SidekiqProcess:
    """A real `sidekiq` process running job classes from `source` (Ruby) on `queues` of `redis_url`.

    Entering waits until it has registered in the `processes` set; leaving sends TERM (KILL after
    `stop_timeout`). `log()` returns its output (kept after exit too), `identity` its Redis identity.
    """

    def __init__(
        self,
        redis_url: str,
        source: str,
        queues: tuple[str, ...] = ("default",),
        concurrency: int = 2,
        shutdown_timeout: int = 5,
        start_timeout: float = 30,
        verbose: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.source = source
        self.queues = queues
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.start_timeout = start_timeout
        self.verbose = verbose
        self.dir = Path(tempfile.mkdtemp(prefix="sidekiq-harness-"))
        self.log_path = ROOT / "test-artifacts" / f"sidekiq-{uuid.uuid4().hex[:8]}.log"
        self.identity: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def command(self, job_file: Path) -> list[str]:
        """The `sidekiq` command line (6.4 flags: -r require, -q queue, -c concurrency, -t timeout, -v)."""
        args = ["sidekiq", "-r", str(job_file), "-c", str(self.concurrency), "-t", str(self.shutdown_timeout)]
        for queue in self.queues:
            args += ["-q", queue]
        return [*args, "-v"] if self.verbose else args

    def __enter__(self) -> Self:
        job_file = self.dir / "jobs.rb"
        job_file.write_text(PRELUDE + self.source)
        self.log_path.parent.mkdir(exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(job_file),
                cwd=self.dir,
                env=ruby_env(self.redis_url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _deadline_poll(self._registered, self.start_timeout, "sidekiq to register in `processes`", self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def _registered(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sidekiq exited {self.proc.returncode} before registering; log:\n{self.log()}")
        client = redis.Redis.from_url(self.redis_url)
        try:
            for raw in client.smembers("processes"):
                identity = raw.decode() if isinstance(raw, bytes) else str(raw)
                if identity.split(":")[-2:-1] == [str(self.proc.pid)]:
                    self.identity = identity
                    return True
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int:
        """The sidekiq process id."""
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        """Send `signum` to the sidekiq process."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float | None = None) -> int:
        """TERM, wait up to `timeout` (default: shutdown timeout + 10 s), then KILL; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout if timeout is not None else self.shutdown_timeout + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        return self.returncode

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


TOKEN = re.compile(r"name=['\"]authenticity_token['\"] value=['\"]([^'\"]*)['\"]")
RETRY_LINK = re.compile(r"href=\"[^\"]*/retries/([0-9.e+-]+-[0-9a-f]+)\"")


class SidekiqWeb:
    """Sidekiq's Web UI (`Sidekiq::Web` behind `Rack::Session::Cookie`) served by thin (else WEBrick) on a free
    loopback port, configured to `redis_url`. Keeps cookies between requests, so forms carry a valid CSRF token."""

    def __init__(self, redis_url: str, start_timeout: float = 30) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.log_path = ROOT / "test-artifacts" / f"sidekiq-web-{uuid.uuid4().hex[:8]}.log"
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ruby", "-"],
                stdin=subprocess.PIPE,
                env=ruby_env(self.redis_url, SIDEKIQ_HARNESS_PORT=str(self.port)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write((PRELUDE + WEB_APP).encode())
        self.proc.stdin.close()
        try:
            _deadline_poll(self._answers, self.start_timeout, f"the Sidekiq Web UI on {self.base}", self.log)
        except BaseException:
            self.close()
            raise
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the web server exited {self.proc.returncode}; log:\n{self.log()}")
        try:
            self.get("/")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def _open(self, path: str, data: dict[str, str] | None = None) -> str:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body)
        try:
            with self.opener.open(request, timeout=30) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{'POST' if body else 'GET'} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc

    def get(self, path: str) -> str:
        """The body of GET `path` (e.g. "/busy"), following redirects; fails on an HTTP error status."""
        return self._open(path)

    def post_form(self, page: str, action: str, fields: dict[str, str]) -> str:
        """GET `page` for a fresh CSRF token (Sidekiq rotates it after each use), then POST `fields` plus
        `authenticity_token` to `action`; returns the body after the redirect."""
        match = TOKEN.search(self.get(page))
        assert match, f"no authenticity_token in {page}"
        return self._open(action, {**fields, "authenticity_token": match.group(1)})

    def retry_keys(self) -> list[str]:
        """The `SCORE-JID` keys of the entries listed on /retries (first page)."""
        return list(dict.fromkeys(RETRY_LINK.findall(self.get("/retries"))))

    def retry_now(self, key: str) -> str:
        """Press "Retry Now" on the retry entry `key` (`SCORE-JID`, see retry_keys)."""
        return self.post_form(f"/retries/{key}", f"/retries/{key}", {"retry": "Retry Now"})

    def quiet(self, identity: str | None = None) -> str:
        """Press Quiet on /busy for process `identity`, or "Quiet All" when None."""
        return self.post_form("/busy", "/busy", {"quiet": "1", **({"identity": identity} if identity else {})})

    def stop(self, identity: str | None = None) -> str:
        """Press Stop on /busy for process `identity`, or "Stop All" when None."""
        return self.post_form("/busy", "/busy", {"stop": "1", **({"identity": identity} if identity else {})})

    def log(self) -> str:
        """What the web server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Stop the web server (TERM, then KILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
