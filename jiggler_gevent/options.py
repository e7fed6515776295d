"""Every option of `gjiggler worker`, defined once.

`WorkerOptions` holds one worker's options. `OPTIONS` describes each: its flags, its help, what kind of value
it takes. The CLI builds its click options from this table; the Django integration reads settings.JIGGLER
keys (a field's name in upper case) against it; `to_argv` writes options back as a command line (the Django
command's worker, the supervisor's replacement children).
"""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from . import config

Queues = tuple[tuple[str, int], ...]
JOB_LOG_LEVELS = ("info", "debug", "off")  # --job-log


@dataclass(frozen=True)
class WorkerOptions:
    """Everything `gjiggler worker` takes, with its defaults."""

    requires: tuple[str, ...] = ()
    concurrency: int = config.DEFAULT_CONCURRENCY
    queues: Queues = ((config.DEFAULT_QUEUE, 1),)
    strict: bool = False
    timeout: float = config.DEFAULT_SHUTDOWN_TIMEOUT
    processes: int = 1
    preempt: float | None = None  # None: configure(preempt=...), else config.DEFAULT_PREEMPT
    poll_interval: float = config.DEFAULT_POLL_INTERVAL
    heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL
    verbose: bool = False
    log_format: str = "text"  # "text" or "json"
    job_log: str = "info"  # the level of the one line per finished job: "info", "debug" (shown with -v), or "off"
    django: bool = False
    redis_url: str | None = None
    namespace: str | None = None
    metrics_port: int | None = None  # serve Prometheus metrics at /metrics on this port
    metrics_host: str = "0.0.0.0"  # the address they listen on (all interfaces, as Prometheus exporters do)
    health_port: int | None = None  # answer /health and /ready on this port
    health_host: str = "0.0.0.0"  # the address they listen on
    health_blocked: float = 30.0  # seconds without a pass of a hub's event loop after which /health says 503
    max_memory: int | None = None  # MB of resident memory past which a process is replaced (under a supervisor)
    max_jobs: int | None = None  # jobs a process takes before it is replaced (under a supervisor)
    wire: str | None = None  # None: configure(wire=...), else "jiggler"; "sidekiq": Sidekiq's payloads and keys
    wait_replicas: int | None = None  # None: configure(wait_replicas=...), else 0; replicas each push waits for

    @property
    def recycles(self) -> bool:
        """Whether a process is replaced past a limit (--max-memory, --max-jobs): that needs a supervisor."""
        return self.max_memory is not None or self.max_jobs is not None

    @property
    def pool_size(self) -> int:
        """Redis connections a worker process needs: one per job greenlet that enqueues, plus its own few
        (the blocking fetch, the Acker, the heartbeat, the Poller, the cancellation listener)."""
        return self.concurrency + 10


class Kind(enum.Enum):
    """The kind of value an option takes."""

    COUNT = "count"  # a whole number >= minimum (and <= maximum, when it has one)
    SECONDS = "seconds"  # a number of seconds >= minimum, never NaN
    FLAG = "flag"  # present or not
    TEXT = "text"  # a string
    QUEUE = "queue"  # NAME or NAME,WEIGHT
    CHOICE = "choice"  # one of Option.choices


@dataclass(frozen=True)
class Option:
    """One worker option: `field` of WorkerOptions, and its settings.JIGGLER key in upper case."""

    field: str
    flags: tuple[str, ...]
    kind: Kind
    help: str
    minimum: float = 0
    maximum: int | None = None  # the largest value a COUNT option takes (None: no bound)
    multiple: bool = False
    metavar: str | None = None
    in_settings: bool = True  # False: not a settings.JIGGLER key
    choices: tuple[str, ...] = ()  # the values a CHOICE option takes

    @property
    def flag(self) -> str:
        """The long flag, as written on generated command lines."""
        return max(self.flags, key=len)

    @property
    def default(self) -> Any:
        """The default, from WorkerOptions."""
        return next(f.default for f in fields(WorkerOptions) if f.name == self.field)

    @property
    def takes_value(self) -> bool:
        return self.kind is not Kind.FLAG

    def render(self, value: Any) -> list[str]:
        """`value` as command-line arguments, in the `--long=value` form (safe for any value)."""
        if value is None:
            return []
        if self.kind is Kind.FLAG:
            return [self.flag] if value else []
        if self.multiple:
            items = [value] if isinstance(value, str) or _is_queue_pair(value) else list(value)
            return [f"{self.flag}={_text(item)}" for item in items]
        return [f"{self.flag}={_text(value)}"]


def _is_queue_pair(value: Any) -> bool:
    """A single ("name", weight) queue given where a list of them was expected."""
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int)


def _text(item: Any) -> str:
    if isinstance(item, (list, tuple)):
        return ",".join(str(part) for part in item)
    return str(item)


OPTIONS: tuple[Option, ...] = (
    Option(
        "requires",
        ("-r", "--require"),
        Kind.TEXT,
        "Module to import after patching (repeatable); it defines the jobs.",
        multiple=True,
        metavar="MODULE",
    ),
    Option("concurrency", ("-c", "--concurrency"), Kind.COUNT, "Greenlets running jobs.", minimum=1),
    Option(
        "queues",
        ("-q", "--queue"),
        Kind.QUEUE,
        "Queue to work (repeatable); weighted random order unless --strict.",
        multiple=True,
        metavar="NAME[,WEIGHT]",
    ),
    Option("strict", ("--strict",), Kind.FLAG, "Strict priority: queues in the order given."),
    Option("timeout", ("-t", "--timeout"), Kind.SECONDS, "Seconds a shutdown waits for running jobs."),
    Option("processes", ("-p", "--processes"), Kind.COUNT, "Worker processes under one supervisor.", minimum=1),
    Option(
        "preempt",
        ("--preempt",),
        Kind.SECONDS,
        "Seconds a greenlet may hold the hub before it is made to "
        "yield; 0 turns it off [default: configure(preempt=...), else 0.1].",
    ),
    Option(
        "poll_interval",
        ("--poll-interval",),
        Kind.SECONDS,
        "Average seconds between polls of the scheduled and retry sets.",
        minimum=0.01,
    ),
    Option(
        "heartbeat_interval",
        ("--heartbeat-interval",),
        Kind.SECONDS,
        "Seconds between heartbeats; a process silent for 12 of them is presumed dead.",
        minimum=0.05,
    ),
    Option("verbose", ("-v", "--verbose"), Kind.FLAG, "Debug logging."),
    Option(
        "log_format",
        ("--log-format",),
        Kind.CHOICE,
        "Log lines as text, or as one JSON object per line (time, level, logger, message, pid; jid, job).",
        choices=("text", "json"),
    ),
    Option(
        "job_log",
        ("--job-log",),
        Kind.CHOICE,
        "The line each finished job gets (outcome, name, jid, run time): at INFO, at DEBUG (shown with -v), or "
        "off (a log line costs some 25 us of CPU: much of what a job that does nothing costs the worker).",
        choices=JOB_LOG_LEVELS,
    ),
    Option(
        "django",
        ("--django",),
        Kind.FLAG,
        "Set Django up (DJANGO_SETTINGS_MODULE) and import each app's jobs module; `manage.py gjiggler` adds it.",
        in_settings=False,
    ),
    Option(
        "redis_url",
        ("--redis-url",),
        Kind.TEXT,
        "Redis URL (default: $JIGGLER_REDIS_URL, $REDIS_URL, redis://localhost:6379/0).",
    ),
    Option("namespace", ("--namespace",), Kind.TEXT, "Key namespace (default: jiggler)."),
    Option(
        "wire",
        ("--wire",),
        Kind.CHOICE,
        "Payload format and key layout: jiggler's, or Sidekiq's, so that Ruby Sidekiq pushes jobs to these "
        "workers and its Web UI shows them (keys without namespace unless --namespace is given) "
        "[default: configure(wire=...), else jiggler].",
        choices=config.WIRES,
    ),
    Option(
        "wait_replicas",
        ("--wait-replicas",),
        Kind.COUNT,
        "Replicas that must acknowledge each push made in this worker (jobs that enqueue, batch callbacks), "
        "with Redis WAIT; a push they do not acknowledge within 1 s raises EnqueueError "
        "[default: configure(wait_replicas=...), else 0].",
    ),
    Option(
        "metrics_port",
        ("--metrics-port",),
        Kind.COUNT,
        "Serve Prometheus metrics at /metrics on this port (one endpoint for all -p processes); needs "
        "prometheus_client (pip install 'jiggler_gevent[metrics]').",
        minimum=1,
        maximum=65535,
        metavar="PORT",
    ),
    Option(
        "metrics_host",
        ("--metrics-host",),
        Kind.TEXT,
        "Address the --metrics-port endpoint listens on (0.0.0.0: every interface, as Prometheus exporters do).",
        metavar="HOST",
    ),
    Option(
        "health_port",
        ("--health-port",),
        Kind.COUNT,
        "Answer GET /health (liveness) and GET /ready (readiness) on this port, from a native thread, so the "
        "answers stay right while a job blocks the hub (one port for all -p processes).",
        minimum=1,
        maximum=65535,
        metavar="PORT",
    ),
    Option(
        "health_host",
        ("--health-host",),
        Kind.TEXT,
        "Address the --health-port endpoint listens on (0.0.0.0: every interface).",
        metavar="HOST",
    ),
    Option(
        "health_blocked",
        ("--health-blocked",),
        Kind.SECONDS,
        "Seconds a process's hub may go without a pass of its event loop before /health answers 503.",
        minimum=1,
        metavar="SECONDS",
    ),
    Option(
        "max_memory",
        ("--max-memory",),
        Kind.COUNT,
        "Replace a worker process whose resident memory passes this many MB: it stops gracefully and the "
        "supervisor starts a fresh one (also with -p 1).",
        minimum=1,
        metavar="MB",
    ),
    Option(
        "max_jobs",
        ("--max-jobs",),
        Kind.COUNT,
        "Replace a worker process once it has taken this many jobs: it finishes them, stops and the supervisor "
        "starts a fresh one (also with -p 1).",
        minimum=1,
        metavar="N",
    ),
)
BY_FIELD: dict[str, Option] = {o.field: o for o in OPTIONS}
SETTINGS: dict[str, Option] = {o.field.upper(): o for o in OPTIONS if o.in_settings}


def parse_queue(value: str) -> tuple[str, int]:
    """`NAME` or `NAME,WEIGHT` -> (name, weight); ValueError says what is wrong."""
    name, _, weight = value.partition(",")
    name = name.strip()
    if not name or ":" in name:
        raise ValueError(f"{value!r}: a queue name must be non-empty and contain no ':'")
    if not weight:
        return name, 1
    try:
        w = int(weight)
    except ValueError:
        raise ValueError(f"{value!r}: the weight after the comma must be a whole number") from None
    if w < 1:
        raise ValueError(f"{value!r}: the weight must be at least 1")
    return name, w


def parse_queues(values: Sequence[str]) -> Queues:
    """Every -q value parsed; the default queue when there is none; ValueError for a queue named twice."""
    parsed = tuple(parse_queue(v) for v in values) or ((config.DEFAULT_QUEUE, 1),)
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError("a queue is named twice")
    return parsed


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for the options in `values` (by field name), in the table's order."""
    args: list[str] = []
    for option in OPTIONS:
        if option.field in values:
            args += option.render(values[option.field])
    return args


def given(argv: Sequence[str]) -> set[str]:
    """The fields of the options that `argv` names (`-q x`, `-qx`, `--queue=x`, `-vc 5`, ...)."""
    by_flag = {flag: option for option in OPTIONS for flag in option.flags}
    found: set[str] = set()
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            option = by_flag.get(arg.partition("=")[0])
            if option is not None:
                found.add(option.field)
                if option.takes_value and "=" not in arg:
                    next(args, None)
        elif arg.startswith("-") and len(arg) > 1:
            for i, letter in enumerate(arg[1:], start=1):  # a cluster of short flags, maybe ending in a value
                short = by_flag.get(f"-{letter}")
                if short is None:
                    break
                found.add(short.field)
                if short.takes_value:
                    if i == len(arg) - 1:
                        next(args, None)
                    break
    return found
