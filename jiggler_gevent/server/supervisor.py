"""The supervisor of `gjiggler worker -p N`: N worker processes, their signals, their restarts.

Guarantee: while the supervisor runs, N children (each an ordinary one-process worker, run by
`run_process`) are running or about to be restarted; a child that
dies without a clean stop has its held jobs put back in their queues at once (Recovery.adopt with force, no
60 s heartbeat wait), then a replacement starts after a back-off that grows while children keep dying young.
A child that stops by itself past --max-jobs or --max-memory (exit 0, its reason written to the
pipe named in $JIGGLER_REPORT_FD) is replaced at once, with one log line saying why.
SIGTERM/SIGINT are forwarded and the supervisor exits 0 once every child has stopped (a second one is
forwarded too, so the children stop at once); SIGTSTP is forwarded. A child that exits with code 2 (a
usage error, such as a module that -r cannot import, or that raises while imported) is not restarted: everything
stops, exit code 2. A forked child writes its usage error to its pipe instead of stderr, and the supervisor shows
the first one, so N children failing alike show it once.
Children run in their own process group, so a Ctrl-C in a terminal reaches them once, through the
supervisor, and they receive SIGTERM if the supervisor itself is killed (Linux).

The first N children are forked before the supervisor has started a greenlet, a thread or a signal
handler, so they start with everything already imported (as gunicorn's preload does) and a clean state;
a replacement is a fresh `python -m jiggler_gevent` process, since a fork then would copy the
supervisor's greenlets.
"""

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Union, cast

import gevent
import gevent.event
import redis

from .. import config, options, scripts
from ..errors import ConfigError
from ..gevent_types import Event
from ..logs import print_error
from ..options import WorkerOptions
from .backoff import exponential
from .heartbeat import new_identity
from .launcher import REPORT_FD_ENV
from .process import Prepare, run_process
from .recovery import Recovery

if TYPE_CHECKING:
    from .health import Responder

log = logging.getLogger("jiggler_gevent.supervisor")

USAGE_ERROR = 2
REPORT_LIMIT = 16_000  # bytes a child writes to its pipe at most: a pipe holds 64 KiB, read once the child has exited
MIN_UPTIME = 10.0  # a child that dies younger than this counts towards the crash back-off
MAX_BACKOFF = 30.0
RECOVERY_GUARD_TTL = 60
Child = Union["subprocess.Popen[bytes]", "ForkedChild"]


def child_options(opts: WorkerOptions) -> WorkerOptions:
    """The options of one child: the supervisor's own, for one process."""
    return dataclasses.replace(opts, processes=1)


def child_command(opts: WorkerOptions) -> list[str]:
    """The command that starts one child as a fresh process (a replacement)."""
    argv = options.to_argv(dataclasses.asdict(child_options(opts)))
    return [sys.executable, "-m", "jiggler_gevent", "worker", *argv]


def backoff(quick_deaths: int) -> float:
    """Seconds to wait before a restart after `quick_deaths` young deaths in a row (the first is free)."""
    return exponential(quick_deaths - 1, 0.5, MAX_BACKOFF)


def report_pipe() -> tuple[int, int]:
    """A pipe for one child's recycling reason: (read end, not blocking; write end)."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    return reader, writer


def read_report(reader: int) -> str | None:
    """What the exited child wrote to its pipe (None: nothing), closing the read end."""
    try:
        data = os.read(reader, 65536)
    except BlockingIOError:  # nothing written; another child may still hold the write end
        data = b""
    except OSError:
        data = b""
    finally:
        os.close(reader)
    return data.decode("utf-8", "replace") or None


def _child_setup() -> None:
    """In the forked child: ask Linux to send SIGTERM when the supervisor dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ForkedChild:
    """A child forked by the supervisor, with the part of Popen's interface the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        """Wait (cooperatively: gevent watches the children it forks) for the exit code."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        """The exit code once wait() has seen it, else None."""
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Send `signum` unless the child has been reaped."""
        if self.returncode is None:
            os.kill(self.pid, signum)


def fork_child(opts: WorkerOptions, prepare: Prepare, report: int | None = None) -> ForkedChild:
    """Fork a child that runs one worker process with `opts` and exits with its code, never returning here;
    it writes its recycling reason to the file descriptor `report`, when given."""
    pid = os.fork()
    if pid:
        return ForkedChild(pid)
    code = 1
    try:
        os.setpgid(0, 0)
        _child_setup()
        if report is not None:
            os.environ[REPORT_FD_ENV] = str(report)
        code = run_process(child_options(opts), prepare)
    except ConfigError as exc:
        report_usage_error(str(exc), report)
        code = USAGE_ERROR
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("worker process %d failed to start", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)


def report_usage_error(message: str, report: int | None) -> None:
    """In a forked child: hand the usage error to the supervisor through its pipe (it shows the first child's
    only), or print it when there is no pipe."""
    if report is not None:
        try:
            os.write(report, message.encode("utf-8", "replace")[:REPORT_LIMIT])
            return
        except OSError:
            pass
    print_error(message)


class Supervisor:
    """Runs, restarts and signals the children of one `-p N` worker."""

    def __init__(self, opts: WorkerOptions, prepare: Prepare = None, cfg: config.Config | None = None) -> None:
        self.opts, self.prepare = opts, prepare
        self.cfg = cfg or config.current()
        self.children: list[Child | None] = [None] * opts.processes
        self.stopping: Event = gevent.event.Event()
        self.exit_code = 0
        self.redis = config.redis_client(self.cfg.url)
        self.identity = new_identity()
        self.reports: dict[int, int] = {}  # child pid -> read end of its report pipe
        self.health_dir: str | None = None
        self.responder: Responder | None = None
        s = scripts.register(self.redis)
        self.recovery = Recovery(self.redis, self.cfg.keys, self.identity, s, opts.heartbeat_interval)

    def run(self) -> int:
        """Start the children, keep them running until told to stop; returns the exit code."""
        metrics_dir = self._metrics_dir()
        self.health_dir = self._health_dir()
        try:
            return self._run()
        finally:
            if self.responder is not None:
                self.responder.stop()
            if metrics_dir is not None:
                from .prometheus import remove_multiprocess_dir

                remove_multiprocess_dir(metrics_dir)
            if self.health_dir is not None:
                from .health import remove_directory

                remove_directory(self.health_dir)

    def _health_dir(self) -> str | None:
        """With --health-port, before the first fork: a fresh directory for the children's health records, named in
        JIGGLER_HEALTH_DIR (health.DIR_ENV; the children inherit it, write there and serve nothing)."""
        if self.opts.health_port is None:
            return None
        from .health import make_directory

        return make_directory()

    def _serve_health(self, directory: str) -> None:
        """Answer /health and /ready from the children's records (a usage error when the port cannot be bound)."""
        from .health import Responder, read_from

        try:
            self.responder = Responder(
                self.opts.health_host,
                cast(int, self.opts.health_port),
                self.opts.health_blocked,
                lambda: read_from(directory),
                self.stopping.is_set,
            )
        except ConfigError as exc:
            self.exit_code = USAGE_ERROR
            self._stop()
            print_error(str(exc))
            return
        self.responder.start()

    def _metrics_dir(self) -> str | None:
        """With --metrics-port, before the first fork: a fresh directory for the children's metric snapshots, named
        in JIGGLER_METRICS_DIR (metrics.DIR_ENV; the children inherit it, write there and serve nothing)."""
        if self.opts.metrics_port is None:
            return None
        path = tempfile.mkdtemp(prefix="jiggler-metrics-")
        os.environ["JIGGLER_METRICS_DIR"] = path
        return path

    def _run(self) -> int:
        first = [self._fork() for _ in self.children]
        self.children[:] = first  # from here on, signals are forwarded to them
        if self.opts.metrics_port is not None:
            from .prometheus import serve_supervised

            try:
                serve_supervised(self.opts.metrics_port, self.opts.metrics_host, self.redis, self.cfg.keys)
            except ConfigError as exc:
                self.exit_code = USAGE_ERROR
                self._stop()
                print_error(str(exc))
        if self.health_dir is not None and not self.stopping.is_set():
            self._serve_health(self.health_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_stop_signal, signum)
        gevent.signal_handler(signal.SIGTSTP, self._forward, signal.SIGTSTP)
        log.info("supervisor pid %d: starting %d worker processes", os.getpid(), len(self.children))
        gevent.joinall([gevent.spawn(self._keep, slot, child) for slot, child in enumerate(first)])
        log.info("supervisor: every worker process has stopped")
        return self.exit_code

    def _keep(self, slot: int, first: Child) -> None:
        """Run the child of one slot again and again until stopping (`first` is already running, and is waited
        for even when the stop came first: the metrics port could not be served)."""
        quick_deaths = 0
        proc: Child | None = first
        while proc is not None or not self.stopping.is_set():
            started = time.monotonic()
            spawned = proc is None
            if proc is None:
                proc = self._spawn()
            self.children[slot] = proc
            if spawned and self.stopping.is_set():  # the stop came while Popen waited for the exec: not forwarded
                proc.send_signal(signal.SIGTERM)
            code = proc.wait()
            self.children[slot] = None
            reason = read_report(self.reports.pop(proc.pid))
            if code == USAGE_ERROR and not self.stopping.is_set():
                self._usage_error(proc.pid, reason)
            if self.opts.metrics_port is not None:
                from .prometheus import forget_process

                forget_process(proc.pid)
            if self.health_dir is not None:
                from .health import forget

                forget(self.health_dir, proc.pid)
            self._recover(proc.pid)
            if self.stopping.is_set():
                return
            if code == 0 and reason is not None:
                log.info("worker process %d stopped: %s; starting a fresh one", proc.pid, reason)
                quick_deaths, proc = 0, None
                continue
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < MIN_UPTIME else 1
            delay = backoff(quick_deaths)
            log.warning("worker process %d exited with code %s; restarting it in %.1fs", proc.pid, code, delay)
            proc = None
            self.stopping.wait(delay)

    def _usage_error(self, pid: int, message: str | None) -> None:
        """A child exited with a usage error: stop every child (before anything that yields, so that the others'
        same error is not shown again), then show it; exit code 2."""
        self.exit_code = USAGE_ERROR
        self._stop()
        if message:
            print_error(message)
        log.error("worker process %d exited with a usage error; stopping", pid)

    def _fork(self) -> ForkedChild:
        """Fork a child (before any greenlet exists), with its report pipe."""
        reader, writer = report_pipe()
        try:
            child = fork_child(self.opts, self.prepare, writer)
        finally:
            os.close(writer)
        self.reports[child.pid] = reader
        return child

    def _spawn(self) -> "subprocess.Popen[bytes]":
        """Start a replacement child as a fresh process, with its report pipe."""
        reader, writer = report_pipe()
        env = {**os.environ, REPORT_FD_ENV: str(writer)}
        try:
            proc = subprocess.Popen(
                child_command(self.opts), process_group=0, preexec_fn=_child_setup, pass_fds=(writer,), env=env
            )
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(writer)
        self.reports[proc.pid] = reader
        return proc

    def _recover(self, pid: int) -> None:
        """Put back the jobs held by the dead child `pid` now, rather than after its heartbeat expires."""
        prefix = f"{socket.gethostname()}:{pid}:"
        keys = self.cfg.keys
        try:
            dead = [i for i in cast("set[str]", self.redis.smembers(keys.processes)) if i.startswith(prefix)]
            if not dead:
                return
            # While it holds adopted jobs the supervisor is a process with a heartbeat, so that if it dies
            # right then, the jobs in its own working list are adopted by a live worker in turn.
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(keys.processes, self.identity)
                pipe.hset(keys.process(self.identity), "supervisor", os.getpid())
                pipe.expire(keys.process(self.identity), RECOVERY_GUARD_TTL)
                pipe.execute()
            for identity in dead:
                self.recovery.adopt(identity, force=True)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.srem(keys.processes, self.identity)
                pipe.delete(keys.process(self.identity))
                pipe.execute()
        except redis.RedisError as exc:
            log.error(
                "could not recover the jobs of worker process %d now (its heartbeat will expire "
                "and another worker will): %s",
                pid,
                exc,
            )

    def _on_stop_signal(self, signum: int) -> None:
        if not self.stopping.is_set():
            log.info("supervisor: %s received, stopping the worker processes", signal.Signals(signum).name)
        self._stop(signum)

    def _stop(self, signum: int = signal.SIGTERM) -> None:
        self.stopping.set()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for proc in self.children:
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass
