"""`gjiggler`: the command line. Reached only through patch.main, so gevent is patched first."""
import json
import logging
import math
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

import click

from . import __version__, config

LOG_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"


class Seconds(click.FloatRange):
    """A number of seconds at least `min`; unlike click.FloatRange it refuses NaN, which compares false to
    every bound and so would slip through."""

    name = "seconds"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        result = super().convert(value, param, ctx)
        if math.isnan(result):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return result


def parse_queue(value: str) -> Tuple[str, int]:
    """`NAME` or `NAME,WEIGHT` -> (name, weight)."""
    name, _, weight = value.partition(",")
    name = name.strip()
    if not name or ":" in name:
        raise click.BadParameter(f"{value!r}: a queue name must be non-empty and contain no ':'")
    if not weight:
        return name, 1
    try:
        w = int(weight)
    except ValueError:
        raise click.BadParameter(f"{value!r}: the weight after the comma must be a whole number") from None
    if w < 1:
        raise click.BadParameter(f"{value!r}: the weight must be at least 1")
    return name, w


def _queues(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> Tuple[Tuple[str, int], ...]:
    parsed = tuple(parse_queue(v) for v in values) or ((config.DEFAULT_QUEUE, 1),)
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise click.BadParameter("a queue is named twice")
    return parsed


def redis_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--redis-url and --namespace, shared by every command; they call configure()."""
    f = click.option("--namespace", default=None, help="Key namespace (default: jiggler).")(f)
    f = click.option("--redis-url", default=None,
                     help="Redis URL (default: $JIGGLER_REDIS_URL, $REDIS_URL, redis://localhost:6379/0).")(f)
    return f


def apply_redis_options(redis_url: Optional[str], namespace: Optional[str]) -> config.Config:
    """Make the command's --redis-url and --namespace the settings in force."""
    if namespace is not None and (not namespace or ":" in namespace):
        raise click.BadParameter("the namespace must be non-empty and contain no ':'", param_hint="--namespace")
    _check_redis_url(config.resolve_redis_url(redis_url))
    return config.configure(redis_url=redis_url, namespace=namespace)


def _check_redis_url(url: str) -> None:
    """A URL redis-py cannot parse is a usage error, not a traceback; the message never repeats the URL."""
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        raise click.BadParameter(f"not a usable Redis URL: {exc}", param_hint="--redis-url") from None


def setup_logging(verbose: bool) -> None:
    """Log to stderr; debug with -v."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gjiggler")
def cli() -> None:
    """jiggler_gevent: background jobs for blocking Python code, on gevent and Redis."""


@cli.command()
@click.option("-r", "--require", "requires", multiple=True, metavar="MODULE",
              help="Module to import after patching (repeatable); it defines the jobs.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=config.DEFAULT_CONCURRENCY,
              show_default=True, help="Greenlets running jobs.")
@click.option("-q", "--queue", "queues", multiple=True, callback=_queues, metavar="NAME[,WEIGHT]",
              help="Queue to work (repeatable); weighted random order unless --strict.")
@click.option("--strict", is_flag=True, help="Strict priority: queues in the order given.")
@click.option("-t", "--timeout", type=Seconds(min=0), default=config.DEFAULT_SHUTDOWN_TIMEOUT,
              show_default=True, help="Seconds a shutdown waits for running jobs.")
@click.option("-p", "--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes under one supervisor.")
@click.option("--preempt", type=Seconds(min=0), default=None,
              help="Seconds a greenlet may hold the hub before it is made to yield; 0 turns it off "
                   "[default: configure(preempt=...), else 0.1].")
@click.option("--poll-interval", type=Seconds(min=0.01), default=config.DEFAULT_POLL_INTERVAL,
              show_default=True, help="Average seconds between polls of the scheduled and retry sets.")
@click.option("--heartbeat-interval", type=Seconds(min=0.05), default=config.DEFAULT_HEARTBEAT_INTERVAL,
              show_default=True, help="Seconds between heartbeats; a process silent for 12 of them is presumed dead.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--django", "django_setup", is_flag=True,
              help="Set Django up (DJANGO_SETTINGS_MODULE) and import each app's jobs module; "
                   "`manage.py gjiggler` adds it.")
@redis_options
def worker(requires: Tuple[str, ...], concurrency: int, queues: Tuple[Tuple[str, int], ...], strict: bool,
           timeout: float, processes: int, preempt: Optional[float], poll_interval: float, heartbeat_interval: float,
           verbose: bool, django_setup: bool, redis_url: Optional[str], namespace: Optional[str]) -> None:
    """Run jobs from the queues until SIGTERM or SIGINT."""
    cfg = apply_redis_options(redis_url, namespace)
    setup_logging(verbose)
    opts = config.WorkerOptions(requires=requires, concurrency=concurrency, queues=queues, strict=strict,
                                timeout=timeout, processes=processes, preempt=preempt,
                                poll_interval=poll_interval, heartbeat_interval=heartbeat_interval,
                                verbose=verbose)
    if processes > 1:
        from .supervisor import supervise

        sys.exit(supervise(opts, sys.argv[1:]))
    from .launcher import Launcher, import_user_modules

    config.set_pool_size(opts.pool_size)  # before user code, so its enqueues share the worker's pool
    if django_setup:
        from .contrib.django.bootstrap import setup_worker

        setup_worker()
    try:
        import_user_modules(requires)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {exc.name or exc}: {exc}", param_hint="-r/--require") from None
    sys.exit(Launcher(opts, cfg).run())


@cli.command()
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("-q", "--queue", default=config.DEFAULT_QUEUE, show_default=True, help="Queue to push to.")
@redis_options
def enqueue(name: str, args: Tuple[str, ...], queue: str, redis_url: Optional[str], namespace: Optional[str]) -> None:
    """Push job NAME with ARGs (each parsed as JSON, else taken as a string)."""
    from .client import Client
    from . import payload as payload_mod

    cfg = apply_redis_options(redis_url, namespace)
    parse_queue(queue)
    p = payload_mod.build(name, [_json_or_text(a) for a in args], {}, queue, config.DEFAULT_RETRIES, True, None)
    click.echo(Client(cfg).push(p))


def _json_or_text(arg: str) -> Any:
    try:
        value = json.loads(arg)
    except ValueError:
        return arg
    from .payload import check_arguments

    try:
        check_arguments([value], {})
    except TypeError:
        return arg
    return value


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@redis_options
def stats(as_json: bool, redis_url: Optional[str], namespace: Optional[str]) -> None:
    """Counts, queues, sets and live processes."""
    from .api import Stats, stats_dict

    apply_redis_options(redis_url, namespace)
    data = stats_dict(Stats())
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"processed {data['processed']}  failed {data['failed']}  enqueued {data['enqueued']}  "
               f"busy {data['busy']}")
    click.echo(f"scheduled {data['scheduled_size']}  retries {data['retry_size']}  dead {data['dead_size']}")
    for q in data["queues"]:
        click.echo(f"queue {q['name']}: {q['size']} job(s), latency {q['latency']:.1f}s")
    for p in data["processes"]:
        click.echo(f"process {p['identity']}: busy {p['busy']}/{p['concurrency']}, queues {','.join(p['queues'])}"
                   f"{' (quiet)' if p['quiet'] else ''}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9292, show_default=True,
              help="Port to listen on (0 picks a free one).")
@redis_options
def web(host: str, port: int, redis_url: Optional[str], namespace: Optional[str]) -> None:
    """Serve the web dashboard until SIGTERM or Ctrl-C."""
    from .web.server import serve

    apply_redis_options(redis_url, namespace)
    setup_logging(False)
    try:
        serve(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _set_command(action: str, set_name: str) -> Callable[..., None]:
    from . import api

    def command(redis_url: Optional[str], namespace: Optional[str]) -> None:
        apply_redis_options(redis_url, namespace)
        target = {"dead": api.DeadSet, "retry": api.RetrySet, "scheduled": api.ScheduledSet}[set_name]()
        n = target.retry_all() if action == "retry" else target.clear()
        click.echo(f"{'retried' if action == 'retry' else 'cleared'} {n} job(s) from the {set_name} set")

    command.__doc__ = (f"Move every job in the {set_name} set back to its queue now." if action == "retry"
                       else f"Delete every job in the {set_name} set.")
    return command


for _action in ("retry", "clear"):
    for _set in ("dead", "retry", "scheduled"):
        if _action == "retry" and _set == "scheduled":
            continue
        cli.command(name=f"{_action}-{_set}")(redis_options(_set_command(_action, _set)))


@cli.command()
@click.option("--jobs", type=click.IntRange(min=1), default=40, show_default=True, help="Example jobs to run.")
@redis_options
def demo(jobs: int, redis_url: Optional[str], namespace: Optional[str]) -> None:
    """Run a worker on a batch of example jobs and report what happened (starts a Redis if none answers)."""
    from .demo import run_demo

    sys.exit(run_demo(jobs, redis_url, namespace))


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; a bad option is one line on stderr and exit code 2; Redis unreachable, one line and 1."""
    import redis

    from .client import EnqueueError

    try:
        cli.main(args=argv, prog_name="gjiggler", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except EnqueueError as exc:
        click.echo(f"gjiggler: error: {exc}", err=True)
        sys.exit(1)
    except redis.RedisError as exc:
        click.echo(f"gjiggler: error: Redis at {config.redacted(config.current().url)}: {exc}", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        click.echo(f"gjiggler: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"gjiggler: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
