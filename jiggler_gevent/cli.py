"""`gjiggler`: the command line. It parses and dispatches; the work is done by the module each command names.

Reached only through patch.main, so gevent is patched first. Nothing here imports the worker (server/) or the
admin side (admin/) at import time: each command imports what it runs, so a worker never loads the admin API.
"""

import functools
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from . import __version__, config, options
from .errors import ConfigError, EnqueueError
from .logs import print_error, setup_logging
from .options import Kind, Option, WorkerOptions

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Seconds(click.FloatRange):
    """A number of seconds at least `min`; unlike click.FloatRange it refuses NaN, which compares false to
    every bound and so would slip through."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        result = super().convert(value, param, ctx)
        if math.isnan(result):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return result


def _queues(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> options.Queues:
    try:
        return options.parse_queues(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _click_option(option: Option) -> Decorator:
    """The click option for one entry of the options table."""
    kwargs: dict[str, Any] = {"help": option.help, "metavar": option.metavar, "multiple": option.multiple}
    if option.kind is Kind.FLAG:
        kwargs["is_flag"] = True
    elif option.kind is Kind.COUNT:
        kwargs.update(type=click.IntRange(min=int(option.minimum), max=option.maximum), default=option.default)
        kwargs["show_default"] = True
    elif option.kind is Kind.SECONDS:
        kwargs.update(type=Seconds(min=option.minimum), default=option.default, show_default=option.default is not None)
    elif option.kind is Kind.QUEUE:
        kwargs["callback"] = _queues
    elif option.kind is Kind.CHOICE:
        kwargs.update(type=click.Choice(option.choices), default=option.default, show_default=True)
    elif option.kind is Kind.TEXT and isinstance(option.default, str):
        kwargs.update(default=option.default, show_default=True)
    return click.option(*option.flags, option.field, **kwargs)


def _options(*fields: str) -> Decorator:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(fields):
            f = _click_option(options.BY_FIELD[name])(f)
        return f

    return decorate


redis_options = _options("redis_url", "namespace")  # every command takes them


def apply_redis_options(redis_url: str | None, namespace: str | None, wire: str | None = None) -> config.Config:
    """Make the command's --redis-url and --namespace (and --wire, for the commands that take it) the settings
    in force."""
    if namespace is not None and (not namespace or ":" in namespace):
        raise click.BadParameter("the namespace must be non-empty and contain no ':'", param_hint="--namespace")
    _check_redis_url(config.resolve_redis_url(redis_url))
    extra = {"wire": wire} if wire is not None else {}
    return config.configure(redis_url=redis_url, namespace=namespace, **extra)


def _check_redis_url(url: str) -> None:
    """A URL redis-py cannot parse is a usage error, not a traceback; the message never repeats the URL."""
    from .connect import check_url

    try:
        check_url(url)
    except ValueError as exc:
        raise click.BadParameter(f"not a usable Redis URL: {exc}", param_hint="--redis-url") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gjiggler")
def cli() -> None:
    """jiggler_gevent: background jobs for blocking Python code, on gevent and Redis."""


@cli.command()
@_options(*(o.field for o in options.OPTIONS))
def worker(**values: Any) -> None:
    """Run jobs from the queues until SIGTERM or SIGINT."""
    from .server.worker import run_worker

    opts = WorkerOptions(**values)
    if not opts.requires and not opts.django:  # the Django command imports each app's jobs module itself
        raise click.UsageError("no job module: give -r MODULE, the module that defines the jobs (repeatable)")
    apply_redis_options(opts.redis_url, opts.namespace)
    sys.exit(run_worker(opts, prepare=_set_django_up if opts.django else None))


def _set_django_up() -> None:
    from .contrib.django.bootstrap import setup_worker

    setup_worker()


@cli.command()
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("-q", "--queue", default=None, help="Queue to push to [default: the job's own with -r, else default].")
@click.option("--priority", type=int, default=None, help="Priority within the queue, -100..100 (higher first).")
@click.option("--group", default=None, help="Fair group (tenant) key: a queue's groups start round-robin.")
@_options("requires")
@redis_options
def enqueue(
    name: str,
    args: tuple[str, ...],
    queue: str | None,
    priority: int | None,
    group: str | None,
    requires: tuple[str, ...],
    redis_url: str | None,
    namespace: str | None,
) -> None:
    """Push job NAME with ARGs (each parsed as JSON, else taken as a string).

    With -r the job registered under NAME in those modules is pushed with its own options (queue, retries,
    timeout, ...; -q, --priority and --group still apply), once its arguments are checked against its signature.
    Without -r the name is not checked and the defaults apply (queue default, 25 retries)."""
    if queue is not None:
        try:
            options.parse_queue(queue)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-q/--queue") from None
    given = {"queue": queue, "priority": priority, "group": group}
    chosen = {option: value for option, value in given.items() if value is not None}
    values = [_json_or_text(a) for a in args]
    try:
        if requires:
            jid = _enqueue_registered(name, values, chosen, requires, redis_url, namespace)
        else:
            jid = _enqueue_by_name(name, values, chosen, redis_url, namespace)
    except ValueError as exc:  # a priority or group refused (out of range, both at once, Sidekiq's wire)
        raise click.UsageError(str(exc)) from None
    if jid is None:
        click.echo("not pushed: an identical unique job holds its lock", err=True)
    else:
        click.echo(jid)


def _enqueue_by_name(
    name: str, values: list[Any], chosen: dict[str, Any], redis_url: str | None, namespace: str | None
) -> str | None:
    """Push by wire name alone, with the default options and those `chosen` (queue, priority, group), saying on
    stderr that the job's own were not applied."""
    from . import payload
    from .client import Client
    from .job import check_placement

    cfg = apply_redis_options(redis_url, namespace)
    priority, group = chosen.get("priority", 0), chosen.get("group")
    check_placement(priority, group)
    built = payload.build(name, values, queue=chosen.get("queue", config.DEFAULT_QUEUE))
    if priority:
        built["priority"] = priority
    if group is not None:
        built["group"] = group
    jid = Client(cfg).push(built)
    click.echo(
        "gjiggler: note: pushed with the default options; the job's own (queue, retries, timeout, ...) were not "
        "applied (use -r MODULE to apply them)",
        err=True,
    )
    return jid


def _enqueue_registered(
    name: str,
    values: list[Any],
    chosen: dict[str, Any],
    requires: tuple[str, ...],
    redis_url: str | None,
    namespace: str | None,
) -> str | None:
    """Import the -r modules and push the job they register under `name`, with its options (and those `chosen`) and
    a signature check.

    The modules are imported first, so that --redis-url and --namespace win over a configure() call in them."""
    from .job import lookup
    from .server.process import import_user_modules

    import_user_modules(requires)
    apply_redis_options(redis_url, namespace)
    func = lookup(name)
    if func is None:
        raise click.UsageError(f"no job named {name!r} is registered in {', '.join(requires)}")
    call = func.set(**chosen) if chosen else func.defaults
    try:
        return call.enqueue(*values)
    except TypeError as exc:
        raise click.UsageError(str(exc)) from None


def _json_or_text(arg: str) -> Any:
    from .payload import check_arguments

    try:
        value = json.loads(arg)
        check_arguments([value], {})
    except (ValueError, TypeError):
        return arg
    return value


@dataclass(frozen=True)
class Shown:
    """What a read command prints: `data` as JSON with --json, else `lines` (`empty` when there are none)."""

    data: Any
    lines: Iterable[str]  # a generator: made only when printed
    empty: str = ""
    sort_keys: bool = False


def read_command(name: str | None = None, *, wire: bool = False) -> Callable[[Callable[..., Shown]], click.Command]:
    """A command that prints what it reads (stats, cron, limits, metrics, status, batches, batch): after its own
    arguments and options come --json, --wire when `wire`, and the Redis options, which are in force before the
    function runs; the function returns what it shows."""

    def decorate(f: Callable[..., Shown]) -> click.Command:
        def command(as_json: bool, redis_url: str | None, namespace: str | None, **values: Any) -> None:
            apply_redis_options(redis_url, namespace, values.pop("wire", None))
            shown = f(**values)
            if as_json:
                click.echo(json.dumps(shown.data, indent=2, sort_keys=shown.sort_keys))
                return
            lines = list(shown.lines)
            if not lines and shown.empty:
                click.echo(shown.empty)
            for line in lines:
                click.echo(line)

        functools.update_wrapper(command, f, updated=())
        command = redis_options(command)
        if wire:
            command = _options("wire")(command)
        command = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)
        command.__click_params__.extend(getattr(f, "__click_params__", ()))  # type: ignore[attr-defined]
        return cli.command(name)(command)

    return decorate


@read_command(wire=True)
def stats() -> Shown:
    """Counts, queues, sets and live processes (with --wire sidekiq: Sidekiq's own, as its Web UI shows them)."""
    from .admin.api import Stats, stats_dict

    data = stats_dict(Stats())

    def lines() -> Iterator[str]:
        yield (
            f"processed {data['processed']}  failed {data['failed']}  enqueued {data['enqueued']}  busy {data['busy']}"
        )
        yield f"scheduled {data['scheduled_size']}  retries {data['retry_size']}  dead {data['dead_size']}"
        for q in data["queues"]:
            yield f"queue {q['name']}: {q['size']} job(s), latency {q['latency']:.1f}s"
        for p in data["processes"]:
            yield (
                f"process {p['identity']}: busy {p['busy']}/{p['concurrency']}, queues {','.join(p['queues'])}"
                f"{' (quiet)' if p['quiet'] else ''}"
            )

    return Shown(data, lines(), sort_keys=True)


@read_command()
def cron() -> Shown:
    """Periodic entries of the running workers: schedule, job, queue, next fire time, last enqueue."""
    from .admin.api import PeriodicSet

    rows = [e.as_dict() for e in PeriodicSet()]
    lines = (
        f"{row['name']}: {row['cron']!r} {row['tz']} -> {row['job']} on {row['queue']}; "
        f"next {_when(row['next_at'])}, last {_when(row['last_at'])}"
        for row in rows
    )
    return Shown(rows, lines, "no periodic entries: no running worker has published any")


@read_command()
@click.argument("queue")
def groups(queue: str) -> Shown:
    """The groups with jobs waiting in QUEUE (started round-robin), and how many each has, in the order of their
    turns."""
    from .admin.api import Queue

    sizes = Queue(queue).groups()
    lines = (f"{group}: {size} job(s)" for group, size in sizes.items())
    return Shown(sizes, lines, f"no group has jobs waiting in queue {queue}")


@read_command()
def limits() -> Shown:
    """Limiters used on the namespace: kind, size, and how much is in use now."""
    from .admin.limits import Limits

    rows = [x.as_dict() for x in Limits()]

    def line(row: dict[str, Any]) -> str:
        per = f" per {row['per']:g}s" if row["kind"] != "concurrent" else ""
        return f"{row['name']}: {row['kind']} {row['in_use']}/{row['size']}{per}"

    return Shown(rows, map(line, rows), "no limiters: none has been used on this namespace")


class NotFound(click.ClickException):
    """What a command asked about does not exist: one line and exit code 2."""

    exit_code = 2


@read_command()
@click.option(
    "--minutes",
    type=click.IntRange(1, config.JOB_METRICS_TTL // 60),
    default=60,
    show_default=True,
    help="How many of the last minutes to add up.",
)
@click.option("--job", "job_name", metavar="NAME", help="One job: its histogram and per-minute p50/p95 too.")
def metrics(minutes: int, job_name: str | None) -> Shown:
    """Per-job metrics: runs, failures, total and p50/p95 run time over the last minutes, by total time."""
    from .admin.metrics import Metrics

    found = Metrics(minutes)
    rows = [j for j in found.jobs if job_name is None or j.name == job_name]

    def lines() -> Iterator[str]:
        for j in rows:
            yield (
                f"{j.name}: {j.runs} runs, {j.failures} failed, {j.total:.3f}s total, "
                f"p50 {_seconds(j.p50)}, p95 {_seconds(j.p95)}"
            )
        if job_name is not None and rows:
            for bound, n in zip((*config.JOB_TIME_BUCKETS, None), rows[0].histogram, strict=True):
                if n:
                    yield f"  {'<= ' + format(bound, 'g') + 's' if bound is not None else 'longer'}: {n}"

    empty = f"no runs in the last {minutes} min" + (f" of {job_name}" if job_name else "")
    return Shown(found.as_dict(job_name), lines(), empty)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


@cli.command()
@click.argument("jids", metavar="JID...", nargs=-1, required=True)
@_options("wire")
@redis_options
def cancel(jids: tuple[str, ...], wire: str | None, redis_url: str | None, namespace: str | None) -> None:
    """Cancel jobs: a waiting one never starts, a running one stops at its next safe point (exit code 1 when one
    is refused: with --wire sidekiq, a job a Ruby Sidekiq process runs)."""
    from .admin.jobs import Job
    from .errors import CancelRefused

    apply_redis_options(redis_url, namespace, wire)
    refused = False
    for jid in jids:
        try:
            found = Job(jid).cancel()
        except CancelRefused as exc:
            click.echo(f"{jid}: refused: {exc}", err=True)
            refused = True
            continue
        click.echo(f"{jid}: cancelled" if found else f"{jid}: not found waiting or running (unknown, or already ended)")
    if refused:
        sys.exit(1)


def _pause_or_resume(queues: tuple[str, ...], pause: bool, wire: str | None, url: str | None, ns: str | None) -> None:
    from .admin.api import Queue

    apply_redis_options(url, ns, wire)
    for name in queues:
        if pause:
            Queue(name).pause()
        else:
            Queue(name).resume()
        click.echo(f"{name}: {'paused' if pause else 'resumed'}")


@cli.command()
@click.argument("queues", metavar="QUEUE...", nargs=-1, required=True)
@_options("wire")
@redis_options
def pause(queues: tuple[str, ...], wire: str | None, redis_url: str | None, namespace: str | None) -> None:
    """Pause queues: no worker starts a job from them until they are resumed (running jobs finish; enqueueing
    still works)."""
    _pause_or_resume(queues, True, wire, redis_url, namespace)


@cli.command()
@click.argument("queues", metavar="QUEUE...", nargs=-1, required=True)
@_options("wire")
@redis_options
def resume(queues: tuple[str, ...], wire: str | None, redis_url: str | None, namespace: str | None) -> None:
    """Resume paused queues: their jobs start at once."""
    _pause_or_resume(queues, False, wire, redis_url, namespace)


@read_command()
@click.argument("jid")
def status(jid: str) -> Shown:
    """A job's status, and the result or error of a job enqueued with result_ttl."""
    from .admin.jobs import Job

    info = Job(jid).info()

    def lines() -> Iterator[str]:
        note = " (not found, or ended without result_ttl)" if info["status"] == "unknown" else ""
        yield f"{jid}: {info['status']}{note}"
        for field, label in (("started_at", "started"), ("updated_at", "last change")):
            if field in info:
                yield f"  {label}: {_when(info[field])}"
        if "result" in info:
            yield f"  result: {json.dumps(info['result'])}"
        if "error_class" in info:
            message = info.get("error_message")
            yield f"  error: {info['error_class']}{': ' + message if message else ''}"

    return Shown(info, lines())


@read_command()
@click.option("--limit", type=click.IntRange(min=1), default=25, show_default=True, help="How many, newest first.")
def batches(limit: int) -> Shown:
    """Recent batches, newest first, with their counts."""
    from .admin.jobs import Batches

    rows = [b.as_dict() for b in Batches().page(0, limit)]
    lines = (
        f"{row['bid']} {row['description']!r}: {_batch_counts(row)}; created {_when(row['created_at'])}" for row in rows
    )
    return Shown(rows, lines, "no batches: none created on this namespace, or all expired")


@read_command()
@click.argument("bid")
def batch(bid: str) -> Shown:
    """One batch: counts, completion and success times, and the jids that failed."""
    from .admin.jobs import BatchStatus

    try:
        row = BatchStatus(bid).as_dict()
    except LookupError as exc:
        raise NotFound(str(exc)) from None

    def lines() -> Iterator[str]:
        yield f"{row['bid']} {row['description']!r}: {_batch_counts(row)}"
        yield f"  created: {_when(row['created_at'])}"
        yield f"  complete: {_when(row['complete_at']) if row['complete'] else 'not yet'}"
        yield f"  success: {_when(row['success_at']) if row['success'] else 'not yet'}"
        for jid in row["failed_jids"]:
            yield f"  failed: {jid}"

    return Shown(row, lines())


@read_command()
@click.option("--limit", type=click.IntRange(min=1), default=25, show_default=True, help="How many, newest first.")
def workflows(limit: int) -> Shown:
    """Recent workflows, newest first: status and steps succeeded."""
    from .admin.workflows import Workflows

    rows = [wf.summary() for wf in Workflows().page(0, limit)]
    lines = (f"{_workflow_line(row)}; created {_when(row['created_at'])}" for row in rows)
    return Shown(rows, lines, "no workflows: none created on this namespace, or all expired")


@read_command()
@click.argument("wid", metavar="ID")
def workflow(wid: str) -> Shown:
    """One workflow: status, result or error, and each step with its status and the steps it waits for."""
    from .admin.workflows import Workflow

    try:
        info = Workflow(wid).info()
    except LookupError as exc:
        raise NotFound(str(exc)) from None

    def lines() -> Iterator[str]:
        yield _workflow_line(info)
        yield f"  created: {_when(info['created_at'])}"
        yield f"  ended: {_when(info['finished_at']) if info['finished_at'] else 'not yet'}"
        if "result" in info:
            yield f"  result: {json.dumps(info['result'])}"
        if "error" in info:
            error, jid = info["error"], info["failed_jid"]
            step = f" (step {jid})" if jid else " (the workflow was cancelled)"
            message = error.get("error_message")
            yield f"  error: {error.get('error_class', '')}{': ' + message if message else ''}{step}"
        for step in info["steps"]:
            after = f" after {','.join(map(str, step['after']))}" if step["after"] else ""
            yield f"  step {step['index']} {step['jid']} {step['name']}: {step['status']}{after}"

    return Shown(info, lines())


def _workflow_line(row: dict[str, Any]) -> str:
    return f"{row['id']}: {row['status']}, {row['succeeded']}/{row['total']} step(s) succeeded"


def _batch_counts(row: dict[str, Any]) -> str:
    state = "success" if row["success"] else "complete" if row["complete"] else "in progress"
    succeeded = row["total"] - row["pending"]
    return f"{succeeded}/{row['total']} succeeded, {row['pending']} pending, {row['failures']} failed, {state}"


def _when(ts: float | None) -> str:
    """A unix time as `YYYY-MM-DD HH:MM:SS UTC`, or `never`."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts is not None else "never"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9292,
    show_default=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve a non-loopback address without a password (JIGGLER_WEB_PASSWORD; user JIGGLER_WEB_USER).",
)
@_options("log_format")
@redis_options
def web(host: str, port: int, no_auth: bool, log_format: str, redis_url: str | None, namespace: str | None) -> None:
    """Serve the web dashboard until SIGTERM or Ctrl-C.

    With JIGGLER_WEB_PASSWORD set (user JIGGLER_WEB_USER, default admin) it asks for HTTP basic auth. It refuses
    to listen on a non-loopback address without a password unless --no-auth is given."""
    import os

    from .admin.web import auth
    from .admin.web.server import serve

    credentials = auth.credentials_from_env(os.environ)
    if credentials is None and not no_auth and not auth.is_loopback(host):
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without a password: set {auth.PASSWORD_ENV} "
            f"(user {auth.USER_ENV}, default {auth.DEFAULT_USER}), listen on 127.0.0.1, or pass --no-auth"
        )
    apply_redis_options(redis_url, namespace)
    setup_logging(False, log_format)
    try:
        serve(host, port, auth=credentials)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _act_on_set(set_name: str, retry: bool, redis_url: str | None, namespace: str | None) -> None:
    from .admin import api

    apply_redis_options(redis_url, namespace)
    target = {"dead": api.DeadSet, "retry": api.RetrySet, "scheduled": api.ScheduledSet}[set_name]()
    n = target.retry_all() if retry else target.clear()
    click.echo(f"{'retried' if retry else 'cleared'} {n} job(s) from the {set_name} set")


@cli.command("retry-dead")
@redis_options
def retry_dead(redis_url: str | None, namespace: str | None) -> None:
    """Move every job in the dead set back to its queue now."""
    _act_on_set("dead", True, redis_url, namespace)


@cli.command("retry-retries")
@redis_options
def retry_retries(redis_url: str | None, namespace: str | None) -> None:
    """Move every job waiting in the retry set back to its queue now."""
    _act_on_set("retry", True, redis_url, namespace)


@cli.command("clear-dead")
@redis_options
def clear_dead(redis_url: str | None, namespace: str | None) -> None:
    """Delete every job in the dead set."""
    _act_on_set("dead", False, redis_url, namespace)


@cli.command("clear-retries")
@redis_options
def clear_retries(redis_url: str | None, namespace: str | None) -> None:
    """Delete every job waiting in the retry set."""
    _act_on_set("retry", False, redis_url, namespace)


@cli.command("clear-scheduled")
@redis_options
def clear_scheduled(redis_url: str | None, namespace: str | None) -> None:
    """Delete every job in the scheduled set."""
    _act_on_set("scheduled", False, redis_url, namespace)


@cli.command()
@click.option("--jobs", type=click.IntRange(min=1), default=40, show_default=True, help="Example jobs to run.")
@redis_options
def demo(jobs: int, redis_url: str | None, namespace: str | None) -> None:
    """Run a worker on a batch of example jobs and report what happened (starts a Redis if none answers)."""
    from .demo.run import run_demo

    sys.exit(run_demo(jobs, redis_url, namespace))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a bad option is one line on stderr and exit code 2; Redis unreachable, one line and 1."""
    import redis

    try:
        cli.main(args=argv, prog_name="gjiggler", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except EnqueueError as exc:
        fail(str(exc), 1)
    except redis.RedisError as exc:
        fail(f"Redis at {config.redacted(config.current().url)}: {exc}", 1)
    except ConfigError as exc:
        fail(str(exc), 2)
    except click.UsageError as exc:
        fail(exc.format_message(), 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)


def fail(message: str, code: int) -> None:
    """Print `gjiggler: error: message` on stderr (as a log record once JSON logging is set up) and exit."""
    print_error(message)
    sys.exit(code)
