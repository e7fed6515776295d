"""`run_worker`: the one function that runs a worker, for the CLI, the supervisor's children and Django.

A worker is either one process (the Launcher and its parts, run by `run_process` in process.py) or, with
`processes > 1`, a supervisor of that many such processes (supervisor.py). --max-jobs and --max-memory need a
supervisor to replace the process, so they bring one also with `processes == 1` (as Celery's limits work with a
pool of any size). gevent must already be patched (patch.py) when this is called.
"""

import os

from .. import config
from ..errors import ConfigError
from ..logs import setup_logging
from ..options import WorkerOptions
from .process import Prepare, run_process


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


def _supervised() -> bool:
    """Whether this process is a supervisor's child (a replacement started as `gjiggler worker -p 1 ...`)."""
    from .launcher import REPORT_FD_ENV

    return REPORT_FD_ENV in os.environ
