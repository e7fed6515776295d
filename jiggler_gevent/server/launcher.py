"""The Launcher: builds one worker process's parts, runs them, and stops them on a signal.

Start order (run_worker has imported the user's modules): cancellation listener (subscribed and caught up first),
Heartbeat (first beat and a recovery sweep), Poller, Scheduler (when the modules registered periodic entries),
switcher, Manager.
SIGTERM/SIGINT: stop the Scheduler (so that another process takes its lease over at once), stop fetching, wait up
to the shutdown timeout for running jobs, put the unfinished ones back, remove the heartbeat, exit 0; a second
SIGTERM/SIGINT during the wait cuts the wait short (still putting everything back). SIGTSTP: quiet (stop fetching,
stay alive).
Recycling (--max-jobs, --max-memory): once the Manager has taken max_jobs payloads, or the resident memory (checked
every second) passes max_memory MB, the process stops the same graceful way, exits 0 and writes why to the pipe its
supervisor named in $JIGGLER_REPORT_FD; the supervisor then starts a fresh process.
"""

import logging
import os
import signal
import time
from typing import TYPE_CHECKING

import gevent
import gevent.event
import redis

from .. import config, limits, middleware
from ..config import Config
from ..gevent_types import Event, Greenlet
from ..keys import Keys
from ..options import WorkerOptions
from ..periodic import entries as periodic_entries
from .acker import Acker, Slots
from .cancels import CancelListener
from .cron import Scheduler
from .cron_table import CronTablePublisher
from .fetch import ReliableFetch
from .guards import ConcurrencyMiddleware, UniqueStartMiddleware
from .heartbeat import BeatPart, Heartbeat, HeartbeatOptions, new_identity, rss_bytes
from .iteration import ProgressFlush
from .job_metrics import Counters
from .job_metrics_flush import JobMetricsFlush
from .manager import Manager
from .poller import Poller
from .preempt import Switcher, resolve_threshold
from .processor import Processor
from .recovery import Recovery
from .redis_signals import RedisSignals
from .retry import RetryMiddleware
from .stats import StatsFlush
from .sweep import Sweeper
from .tally import Tally
from .timeouts import TimeoutMiddleware

if TYPE_CHECKING:
    from .health import Reporter, Responder
    from .prometheus import JobMetrics

log = logging.getLogger("jiggler_gevent.launcher")

REPORT_FD_ENV = "JIGGLER_REPORT_FD"  # set by the supervisor: the pipe a child writes its recycling reason to
MEMORY_CHECK_INTERVAL = 1.0  # seconds between two looks at the resident memory (--max-memory)
MB = 1024 * 1024
JOB_LOG_LEVEL_OF: dict[str, int | None] = {"info": logging.INFO, "debug": logging.DEBUG, "off": None}  # --job-log


def server_chain(
    counters: "Tally | Counters", metrics: "JobMetrics | None" = None, slots: Slots | None = None
) -> middleware.Chain:
    """Built-in middleware around the user's: the tally (feeding the counters and the Prometheus metrics when on)
    and retry outermost, then the unique-at-start release and the job's concurrency slot (`slots`: those the
    fetch took, acker.Slots), the job timer innermost."""
    chain = middleware.Chain()
    guards = (UniqueStartMiddleware(), ConcurrencyMiddleware(slots))
    outer = counters if isinstance(counters, Tally) else Tally((counters, metrics))
    for entry in (outer, RetryMiddleware(), *guards, *middleware.server.entries, TimeoutMiddleware()):
        chain.add(entry)
    return chain


class Launcher:
    """One worker process: Manager, Poller, Heartbeat, Scheduler and switcher, with their lifecycle."""

    def __init__(self, opts: WorkerOptions, cfg: Config | None = None) -> None:
        """Built by run_process (worker.py), which has sized the connection pool before the user's modules."""
        self.opts = opts
        self.cfg = cfg or config.current()
        keys = self.cfg.keys
        self.redis = config.redis_client(self.cfg.url)
        self.identity = new_identity()
        limits.set_holder(self.identity)  # the slots this process takes are freed by the recovery of its death
        self.fetch = ReliableFetch(self.redis, keys, self.identity, opts.queues, opts.strict)
        self.acker = Acker(self.redis, keys, self.fetch.working)
        self.counters = Counters()
        self.metrics: JobMetrics | None = None
        if opts.metrics_port is not None:
            from .prometheus import single_process  # prometheus_client is loaded only with --metrics-port

            queues = tuple(q for q, _ in opts.queues)
            port, host = opts.metrics_port, opts.metrics_host
            self.metrics = single_process(port, host, self.redis, keys, queues, opts.concurrency)
        self.tally = Tally((self.counters, self.metrics))  # one decision per finished job, fed to both
        self.processor = Processor(
            self.acker,
            server_chain(self.tally, slots=self.fetch.slots),
            on_failure=self.tally.unrunnable,
            job_log_level=JOB_LOG_LEVEL_OF[opts.job_log],
            on_expired=self.tally.expired,
        )
        self.manager = Manager(
            self.fetch,
            self.processor,
            self.acker,
            opts.concurrency,
            opts.max_jobs,
            on_max_jobs=lambda: self.recycle(f"max jobs reached ({opts.max_jobs} jobs)"),
        )
        self.cancels = CancelListener(self.redis, keys, self.processor)
        self.recovery = Recovery(self.redis, keys, self.identity, self.fetch.scripts, opts.heartbeat_interval)
        self.poller = Poller(self.redis, keys, self.fetch.scripts, opts.poll_interval)
        entries = periodic_entries()
        self.scheduler = (
            Scheduler(self.redis, keys, self.identity, entries, self.fetch.scripts, opts.heartbeat_interval)
            if entries
            else None
        )
        self.heartbeat = self._heartbeat(keys)
        self.stop_requested: Event = gevent.event.Event()
        self.force: Event = gevent.event.Event()
        self.switcher: Switcher | None = None
        self.recycle_reason: str | None = None
        self.memory_watch: Greenlet | None = None
        self.report_fd = _take_report_fd()
        self.health: list[Reporter | Responder] = self._health(opts)  # started in this order, stopped in reverse

    def _health(self, opts: WorkerOptions) -> "list[Reporter | Responder]":
        """With --health-port: this process's Reporter, and the Responder that serves the port when no supervisor
        does (the port is bound here: ConfigError when it cannot be); without, none."""
        if opts.health_port is None:
            return []
        from . import health  # loaded only with --health-port

        directory = os.environ.get(health.DIR_ENV)
        if directory is not None:  # a supervisor's child: the supervisor serves the port from this file
            return [health.Reporter(self._vitals, health.write_to(directory))]
        reporter = health.Reporter(self._vitals, lambda v: None)  # its own latest record is what is served
        responder = health.Responder(
            opts.health_host,
            opts.health_port,
            opts.health_blocked,
            lambda: [v] if (v := reporter.latest) is not None else [],
        )
        return [reporter, responder]

    def _vitals(self) -> dict[str, object]:
        """This process's health record but for its times (health.Reporter); runs in the reporter's thread."""
        return {
            "heartbeat_ttl": self.heartbeat.opts.ttl,
            "heartbeat_failing_since": _wall(self.heartbeat.failing_since),
            "fetch_failing_since": _wall(self.manager.failing_since),
            "quiet": self.heartbeat.quiet,
            "stopping": self.stop_requested.is_set(),
            "busy": self.manager.busy,
        }

    def _heartbeat(self, keys: Keys) -> Heartbeat:
        """The heartbeat, with what goes with each beat: counts, per-job metrics, signals sent through Redis,
        the periodic table, then the recovery sweep."""
        opts = self.opts
        info = {
            "concurrency": opts.concurrency,
            "queues": [q for q, _ in opts.queues],
            "namespace": self.cfg.namespace,
            "cron": self.scheduler.table.signature if self.scheduler is not None else None,
        }
        beat = HeartbeatOptions(
            interval=opts.heartbeat_interval,
            info=info,
            busy=lambda: self.manager.busy,
            running=lambda: self.processor.running,
        )
        parts: list[BeatPart] = [
            StatsFlush(keys, self.counters),
            JobMetricsFlush(keys, self.counters),
            RedisSignals(keys, self.identity, self._on_redis_signal),
        ]
        if self.scheduler is not None:
            parts.append(CronTablePublisher(keys, self.scheduler.table, beat.ttl))
        parts.append(ProgressFlush(keys, lambda: {ctx.jid for ctx in self.processor.running.values()}))
        parts.append(Sweeper(self.recovery, beat.ttl))
        return Heartbeat(self.redis, keys, self.identity, beat, parts)

    def start(self) -> None:
        """Start every part; the process takes jobs from here on."""
        self.cancels.start()
        # Know the cancellations kept in Redis before taking a job: a cancelled job recovered or held would start.
        if not self.cancels.subscribed.wait(timeout=10):
            log.warning("not listening for cancellations yet after 10s; taking jobs anyway")
        self.heartbeat.start()
        self.poller.start()
        if self.scheduler is not None:
            self.scheduler.start()
        self._start_switcher()
        if self.opts.max_memory is not None:
            self.memory_watch = gevent.spawn(self._watch_memory, self.opts.max_memory)
        if self.metrics is not None:
            self.metrics.start(lambda: self.manager.busy)
        for part in self.health:
            part.start()
        self.manager.start()
        log.info(
            "worker %s started: concurrency %d, queues %s%s, redis %s, namespace %s",
            self.identity,
            self.opts.concurrency,
            ",".join(f"{q}:{w}" for q, w in self.opts.queues),
            " (strict)" if self.opts.strict else "",
            config.redacted(self.cfg.url),
            self.cfg.namespace,
        )

    def _start_switcher(self) -> None:
        threshold = resolve_threshold(self.opts.preempt)
        self.processor.cancel_within = max(10 * threshold, 1.0)
        if threshold > 0:
            # A job whose timeout found no safe point is failed (abandoned) while it still runs; the worker
            # then stops gracefully, and a supervisor or service manager starts a fresh one: nothing is lost.
            self.switcher = Switcher(threshold, runner=self.processor, on_abandon=self.stop_requested.set)
            self.switcher.start()

    def recycle(self, reason: str) -> None:
        """Stop gracefully so that the supervisor starts a fresh process (--max-jobs, --max-memory)."""
        if self.stop_requested.is_set():
            return
        log.info("%s: stopping, to be replaced by a fresh process", reason)
        self.recycle_reason = reason
        self.stop_requested.set()

    def _watch_memory(self, limit_mb: int) -> None:
        while not self.stop_requested.wait(MEMORY_CHECK_INTERVAL):
            rss = rss_bytes()
            if rss > limit_mb * MB:
                self.recycle(f"RSS {rss // MB} MB over {limit_mb} MB")
                return

    def _report(self) -> None:
        """Tell the supervisor why this process stopped by itself (nothing when it was told to stop)."""
        if self.report_fd is None or self.recycle_reason is None:
            return
        try:
            os.write(self.report_fd, self.recycle_reason.encode("utf-8"))
        except OSError as exc:
            log.warning("could not tell the supervisor why this process stops: %s", exc)

    def quiet(self) -> None:
        """Stop taking jobs; running ones finish."""
        log.info("quiet: no new jobs will be fetched")
        self.manager.quiet()
        self.heartbeat.quiet = True  # said once it is so: the fetcher has ended

    def stop(self) -> None:
        """Graceful stop within the shutdown timeout (shorter if forced)."""
        log.info("stopping: waiting up to %.1fs for %d running job(s)", self.opts.timeout, self.manager.busy)
        if self.scheduler is not None:
            self.scheduler.stop()
        self.manager.quiet()
        self.processor.iterations.pause()  # iterable jobs stop at their next checkpoint and are put back
        self._wait_for_jobs(self.opts.timeout)
        requeued = self.manager.stop(0)
        self.cancels.stop()
        self.poller.stop()
        self._release_holds()
        self.heartbeat.stop()
        if self.switcher is not None:
            self.switcher.stop()
        if self.memory_watch is not None:
            self.memory_watch.kill()
        if self.metrics is not None:
            self.metrics.stop()
        for part in reversed(self.health):
            part.stop()
        log.info("stopped; %d unfinished job(s) put back", requeued)

    def _release_holds(self) -> None:
        try:
            freed = self.recovery.release_own()
        except redis.RedisError as exc:
            log.warning("could not give back the slots this process held (their lock timeout frees them): %s", exc)
            return
        if freed:
            log.info("gave back %d concurrency slot(s) of jobs stopped at shutdown", freed)

    def _wait_for_jobs(self, timeout: float) -> None:
        joiner: Greenlet = gevent.spawn(self.manager.join)
        gevent.wait([joiner, self.force], timeout=timeout, count=1)
        joiner.kill()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop; returns the exit code."""
        self._install_signals()
        self.start()
        self.stop_requested.wait()
        self.stop()
        self._report()
        return 0

    def _install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_stop_signal, signum)
        gevent.signal_handler(signal.SIGTSTP, lambda: gevent.spawn(self.quiet))

    def _on_redis_signal(self, name: str) -> None:
        """A signal sent through Redis (Sidekiq's Web UI and API, with wire="sidekiq"): TSTP quiets, TERM stops."""
        if name == "TSTP":
            gevent.spawn(self.quiet)
        elif name in ("TERM", "INT"):
            self._on_stop_signal(signal.Signals["SIG" + name])
        else:
            log.info("ignoring signal %s sent through Redis (only TSTP and TERM are acted on)", name)

    def _on_stop_signal(self, signum: int) -> None:
        if self.stop_requested.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            self.force.set()
        else:
            log.info("%s received", signal.Signals(signum).name)
            self.stop_requested.set()


def _wall(monotonic: float | None) -> float | None:
    """A time.monotonic() instant as wall-clock time (time.time()); None stays None."""
    return None if monotonic is None else time.time() - (time.monotonic() - monotonic)


def _take_report_fd() -> int | None:
    """The supervisor's pipe from $JIGGLER_REPORT_FD, taken out of the environment (and kept from the jobs'
    subprocesses), so that only this process writes to it."""
    value = os.environ.pop(REPORT_FD_ENV, None)
    if not value:
        return None
    try:
        fd = int(value)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        log.warning("ignoring %s=%r: not an open file descriptor", REPORT_FD_ENV, value)
        return None
    return fd
