"""`run_worker`: the one function that runs a worker, for the CLI, the supervisor's children and Django.

A worker is either one process (the Launcher and its parts) or, with `processes > 1`, a supervisor of that
many such processes (supervisor.py). --max-jobs and --max-memory need a supervisor to replace the process, so
they bring one also with `processes == 1` (as Celery's limits work with a pool of any size). gevent must
already be patched (patch.py) when this is called.
"""

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace

from .. import config
from ..errors import ConfigError
from ..logs import setup_logging
from ..options import WorkerOptions
from ..periodic import PeriodicError

Prepare = Callable[[], None] | None


def run_worker(opts: WorkerOptions, prepare: Prepare = None) -> int:
    """Run a worker with `opts` until it is stopped; returns the process's exit code.

    `prepare()` runs in each worker process before the -r modules are imported (the Django integration sets
    Django up there). Raises ConfigError when a -r module cannot be imported, or when
    --metrics-port is given without prometheus_client.
    """
    given = {"wire": opts.wire, "wait_replicas": opts.wait_replicas}
    extra = {name: value for name, value in given.items() if value is not None}
    cfg = config.configure(redis_url=opts.redis_url, namespace=opts.namespace, **extra)
    setup_logging(opts.verbose, opts.log_format)
    check_metrics_extra(opts)
    if opts.processes > 1 or (opts.recycles and not _supervised()):
        from .supervisor import Supervisor

        return Supervisor(opts, prepare, cfg).run()
    return run_process(opts, prepare, cfg)


def check_metrics_extra(opts: WorkerOptions) -> None:
    """ConfigError naming the extra to install when --metrics-port is given without prometheus_client."""
    if opts.metrics_port is None:
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--metrics-port needs prometheus_client, which cannot be imported ({exc}): "
            "pip install 'jiggler_gevent[metrics]'"
        ) from None


def run_process(opts: WorkerOptions, prepare: Prepare = None, cfg: config.Config | None = None) -> int:
    """Run one worker process (whatever `opts.processes` says); returns its exit code."""
    from .launcher import Launcher

    config.set_pool_size(opts.pool_size)  # before user code, so its enqueues share the worker's pool
    if prepare is not None:
        prepare()
    import_user_modules(opts.requires)
    if cfg is not None and opts.wire is None and config.current().wire != cfg.wire:
        cfg = replace(cfg, extra={**cfg.extra, "wire": config.current().wire})  # configure(wire=...) in a -r module
    return Launcher(opts, cfg).run()


def _supervised() -> bool:
    """Whether this process is a supervisor's child (a replacement started as `gjiggler worker -p 1 ...`)."""
    from .launcher import REPORT_FD_ENV

    return REPORT_FD_ENV in os.environ


def import_user_modules(requires: tuple[str, ...]) -> None:
    """Import each -r module; the current directory is searched first, as `python -m` would.

    A module that cannot be imported, that raises while it is imported (its error and the traceback of its own
    frames make the message), or whose periodic() calls are refused (two entries with one name and other settings,
    a bad expression, ...) is a usage error: ConfigError, which the CLI turns into exit code 2 and a supervisor
    into a stop, never a restart.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in requires:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"Invalid value for -r/--require: cannot import {exc.name or exc}: {exc}") from None
        except PeriodicError as exc:
            raise ConfigError(f"-r/--require {name}: {exc}") from None
        except (Exception, SystemExit) as exc:
            raise ConfigError(f"-r/--require {name}: importing it raised {_described(exc)}") from None


def _described(exc: BaseException) -> str:
    """`Class: message` of an exception a module raised at import, then the traceback of the frames below the
    import machinery (the module's own, and what it called)."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen importlib") and frame.filename not in _IMPORT_MACHINERY
    ]
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if not frames:
        return text
    return f"{text}\nTraceback (most recent call last):\n{''.join(traceback.format_list(frames))}{text}"


_IMPORT_MACHINERY = (__file__, importlib.__file__)
