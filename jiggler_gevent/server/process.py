"""`run_process`: one worker process, the path of `-p 1` and of each child of a supervisor (supervisor.py).

It sets the pool size, runs the caller's `prepare()` (Django's set-up), imports the -r modules and runs the
Launcher. worker.py decides between it and a supervisor; the supervisor runs it in each child it forks. Its own
module, so that neither of them imports the other.
"""

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace

from .. import config
from ..errors import ConfigError
from ..options import WorkerOptions
from ..periodic import PeriodicError

Prepare = Callable[[], None] | None


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
