"""Health for orchestrators (`--health-port PORT`): `GET /health` (liveness) and `GET /ready` (readiness).

Each worker process keeps a record of its vitals (`Vitals`), rewritten every REPORT_INTERVAL by a native OS thread
(`Reporter`): when its hub last completed a pass of the event loop (a check watcher counts passes in C, as the
switcher's does; an idle loop is woken through an async watcher, so only a blocked hub stops counting), since when
its heartbeat and its fetch have failed, whether it is quiet or stopping. A `Responder`, another native thread,
answers HTTP from the records alone, so its answers stay right while a hub is blocked, which an endpoint served by
the hub itself could never say. One process serves its own record. Under a supervisor (-p N, --max-jobs,
--max-memory) the supervisor names a directory in DIR_ENV before it forks; every child writes `<pid>.json` there
(by rename, so a reader never sees half a record) and serves nothing, and the supervisor serves the port from the
children's records, dropping a child's record when it reaps the child.

A record not rewritten for longer than the blocked bound means its reporter could not run: the process is
stopped, or C code holds the GIL. The threads take no lock of gevent's and log nothing (the logging module's locks
are gevent's once patched); they read plain attributes and use the original socket and sleep.
"""

import _socket  # the C sockets: the socket module's are gevent's once patched, and these threads have no hub
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import gevent
from gevent import monkey

from ..errors import ConfigError
from ..gevent_types import AsyncWatcher, Watcher
from .preempt import PassCounter

DIR_ENV = "JIGGLER_HEALTH_DIR"  # set by the supervisor: its children write their records there, serve nothing
REPORT_INTERVAL = 0.5  # seconds between two records of a process
WAKE_GRACE = 0.01  # seconds an idle loop has to make the pass the reporter woke it for
READ_TIMEOUT = 2.0  # seconds a client has to send its request head
MAX_HEAD = 8192  # bytes of request head read at most

_real_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")
_real_start_thread: Callable[..., int] = monkey.get_original("_thread", "start_new_thread")


@dataclass(frozen=True)
class Vitals:
    """One worker process's record; times are wall-clock seconds (time.time())."""

    pid: int
    written_at: float
    hub_pass_at: float  # when the reporter last saw the event loop complete a pass
    heartbeat_ttl: float
    heartbeat_failing_since: float | None = None
    fetch_failing_since: float | None = None
    quiet: bool = False
    stopping: bool = False
    busy: int = 0


# -- judging the records ---------------------------------------------------------------------------------------


def liveness(records: Iterable[Vitals], now: float, blocked: float) -> tuple[bool, dict[str, Any]]:
    """Whether every process is alive: its hub switches, its record is fresh, its heartbeat reaches Redis within
    its TTL. With no record yet (starting), alive: a liveness probe must not kill a worker that is starting."""
    return _judge(records, now, lambda v: _stuck(v, now, blocked), ("ok", "unhealthy"), empty_ok=True)


def readiness(
    records: Iterable[Vitals], now: float, blocked: float, stopping: bool = False
) -> tuple[bool, dict[str, Any]]:
    """Whether every process fetches jobs and reaches Redis (and at least one has said so)."""
    ok, body = _judge(records, now, lambda v: _not_ready(v, now, blocked), ("ready", "not ready"), empty_ok=False)
    if stopping:
        ok, body["status"] = False, "not ready"
        body["reasons"].insert(0, "the worker is stopping")
    return ok, body


def _judge(
    records: Iterable[Vitals],
    now: float,
    reasons_of: Callable[[Vitals], list[str]],
    words: tuple[str, str],
    empty_ok: bool,
) -> tuple[bool, dict[str, Any]]:
    processes, reasons = [], []
    for v in sorted(records, key=lambda v: v.pid):
        mine = reasons_of(v)
        reasons += [f"process {v.pid}: {reason}" for reason in mine]
        processes.append(
            {
                "pid": v.pid,
                "ok": not mine,
                "reasons": mine,
                "busy": v.busy,
                "hub_idle_seconds": round(max(0.0, now - v.hub_pass_at), 3),
                "report_age_seconds": round(max(0.0, now - v.written_at), 3),
            }
        )
    if not processes and not empty_ok:
        reasons.append("no worker process has reported yet")
    ok = not reasons
    status = words[0] if ok else words[1]
    if not processes and empty_ok:
        status = "starting"
    return ok, {"status": status, "reasons": reasons, "processes": processes}


def _stuck(v: Vitals, now: float, blocked: float) -> list[str]:
    reasons = []
    silent = now - v.written_at
    if silent > blocked:
        reasons.append(f"no report for {silent:.1f}s: the process is stopped, or C code holds the GIL")
    idle = now - v.hub_pass_at
    if idle > blocked:
        reasons.append(f"its hub has not switched for {idle:.1f}s (more than {blocked:g}s): a job blocks it")
    if v.heartbeat_failing_since is not None and now - v.heartbeat_failing_since > v.heartbeat_ttl:
        failing = now - v.heartbeat_failing_since
        reasons.append(f"its heartbeat has not reached Redis for {failing:.1f}s (its TTL is {v.heartbeat_ttl:g}s)")
    return reasons


def _not_ready(v: Vitals, now: float, blocked: float) -> list[str]:
    reasons = []
    silent = now - v.written_at
    if silent > blocked:
        reasons.append(f"no report for {silent:.1f}s: the process is stopped, or C code holds the GIL")
    if v.stopping:
        reasons.append("stopping")
    elif v.quiet:
        reasons.append("quiet: it fetches no new jobs")
    if v.fetch_failing_since is not None:
        reasons.append(f"Redis has not answered its fetch for {now - v.fetch_failing_since:.1f}s")
    if v.heartbeat_failing_since is not None:
        reasons.append(f"its heartbeat has not reached Redis for {now - v.heartbeat_failing_since:.1f}s")
    return reasons


# -- a worker process's record ---------------------------------------------------------------------------------


class Reporter:
    """A native thread that writes this process's vitals every REPORT_INTERVAL, with `write`.

    `read()` gives the rest of the record (every field but pid, written_at and hub_pass_at) from plain attributes;
    it runs in the thread.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], write: Callable[[Vitals], None]) -> None:
        self.read, self.write = read, write
        self.latest: Vitals | None = None
        self.running = False
        self._passes = PassCounter()
        self._check: Watcher | None = None
        self._wake: AsyncWatcher | None = None

    def start(self) -> None:
        """Install the loop watchers and start the thread. Main thread only."""
        loop = gevent.get_hub().loop
        self._check = loop.check(ref=False)
        self._check.start(self._passes.tick)
        self._wake = loop.async_(ref=False)
        self._wake.start(tuple)  # nothing to do: the wake-up is the point
        self.running = True
        _real_start_thread(self._run, (self._wake,))

    def stop(self) -> None:
        """End the thread (at its next wake) and the watchers."""
        self.running = False
        for watcher in (self._check, self._wake):
            if watcher is not None:
                watcher.close()
        self._check = self._wake = None

    def _run(self, wake: AsyncWatcher) -> None:
        pid, seen, hub_pass_at = os.getpid(), -1, time.time()
        while self.running:
            passes = self._passes.value
            if passes == seen:
                wake.send()  # an idle loop makes a pass at once; a blocked hub does not
                _real_sleep(WAKE_GRACE)
                passes = self._passes.value
            now = time.time()
            if passes != seen:
                seen, hub_pass_at = passes, now
            self.latest = Vitals(pid, now, hub_pass_at, **self.read())
            try:
                self.write(self.latest)
            except OSError:
                pass  # the directory went away (the supervisor is stopping): the next write tries again
            _real_sleep(REPORT_INTERVAL)


def write_to(directory: str) -> Callable[[Vitals], None]:
    """A `write` for Reporter that puts each record in `directory`/<pid>.json, by rename."""

    def write(v: Vitals) -> None:
        temporary = os.path.join(directory, f".{v.pid}.tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(asdict(v), f)
        os.replace(temporary, os.path.join(directory, f"{v.pid}.json"))

    return write


def read_from(directory: str) -> list[Vitals]:
    """The records in `directory`; a file that cannot be read as one is left out."""
    records = []
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")]
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                records.append(Vitals(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue
    return records


def make_directory() -> str:
    """A fresh directory for the children's records, named in DIR_ENV (the children inherit it)."""
    path = tempfile.mkdtemp(prefix="jiggler-health-")
    os.environ[DIR_ENV] = path
    return path


def forget(directory: str, pid: int) -> None:
    """Drop the record of child `pid`, which has exited."""
    try:
        os.unlink(os.path.join(directory, f"{pid}.json"))
    except OSError:
        pass


def remove_directory(directory: str) -> None:
    """Remove the records' directory (the supervisor has stopped)."""
    os.environ.pop(DIR_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


# -- the HTTP side ---------------------------------------------------------------------------------------------


class Responder:
    """Answers /health and /ready on `host`:`port` from a native thread, judging `records()`.

    The port is bound at construction: ConfigError when it cannot be. One request at a time, each on a fresh
    connection (a probe's), which has READ_TIMEOUT to send its head.
    """

    def __init__(
        self,
        host: str,
        port: int,
        blocked: float,
        records: Callable[[], list[Vitals]],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.blocked, self.records, self.stopping = blocked, records, stopping
        self.listener = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(16)
        except OSError as exc:
            self.listener.close()
            raise ConfigError(f"--health-port {port} on {host}: cannot listen: {exc.strerror or exc}") from None
        self.port = int(self.listener.getsockname()[1])

    def start(self) -> None:
        """Start answering."""
        _real_start_thread(self._serve, ())

    def stop(self) -> None:
        """Stop answering: the thread's accept fails and it ends."""
        try:
            self.listener.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for a GET of `path`."""
        now = time.time()
        if path == "/health":
            ok, body = liveness(self.records(), now, self.blocked)
        elif path == "/ready":
            ok, body = readiness(self.records(), now, self.blocked, self.stopping())
        else:
            return 404, {"status": "not found", "reasons": [f"{path}: only /health and /ready are served here"]}
        return (200 if ok else 503), body

    def _serve(self) -> None:
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]  # the C type's accept, untyped
            except OSError:
                return  # shut down by stop()
            conn = _socket.socket(self.listener.family, _socket.SOCK_STREAM, 0, fd)
            try:
                conn.settimeout(READ_TIMEOUT)
                conn.sendall(self._respond(_read_head(conn)))
            except OSError:
                pass
            finally:
                conn.close()

    def _respond(self, head: bytes) -> bytes:
        method, path = _request_line(head)
        if method not in ("GET", "HEAD"):
            status, body = 405, {"status": "method not allowed", "reasons": ["only GET and HEAD"]}
        else:
            status, body = self.answer(path)
        payload = json.dumps(body).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + (payload if method != "HEAD" else b"")


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _read_head(conn: Any) -> bytes:
    """The request's head, read whole (closing with unread bytes would reset the connection before the answer)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
        chunk = conn.recv(1024)
        if not chunk:
            break
        head += chunk
    return head


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, path without its query) of a request head; ("", "") when it is not HTTP."""
    words = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(words) < 2:
        return "", ""
    return words[0].upper(), words[1].split("?", 1)[0]
