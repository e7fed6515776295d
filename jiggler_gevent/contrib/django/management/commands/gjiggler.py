"""`python manage.py gjiggler [worker options]`: run a jiggler_gevent worker for this Django project.

The command does not run the worker in this process: Django is already loaded here, and gevent must patch
the standard library before anything else is imported. It re-executes `python -m jiggler_gevent worker
--django` with the options from settings.JIGGLER followed by the ones given here (which win), in place
(os.execve), so the process id and signals stay the same.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand

from ...conf import from_settings, worker_args

# manage.py options Django has already applied (settings module, sys.path) before the command runs.
_DJANGO_VALUE_OPTIONS = ("--settings", "--pythonpath")
_DJANGO_FLAGS = ("--traceback", "--no-color", "--force-color", "--skip-checks")


def split_django_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the worker's arguments, the --pythonpath values): manage.py's own options are not the worker's."""
    worker: list[str] = []
    pythonpath: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in _DJANGO_VALUE_OPTIONS:
            value = value if eq else next(args, "")
            if name == "--pythonpath":
                pythonpath.append(value)
        elif arg not in _DJANGO_FLAGS:
            worker.append(arg)
    return worker, pythonpath


def _child_env(pythonpath: Sequence[str]) -> dict[str, str]:
    """This environment, with the project's folder (manage.py's) and any --pythonpath on PYTHONPATH,
    so that `python -m jiggler_gevent` imports the settings and apps as manage.py did."""
    paths = [os.path.dirname(os.path.abspath(sys.argv[0])), *map(os.path.abspath, pythonpath)]
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def exec_worker(cli_args: Sequence[str], pythonpath: Sequence[str] = ()) -> None:
    """Replace this process with the worker; never returns."""
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "--django", *worker_args(from_settings(), cli_args)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, _child_env(pythonpath))


class Command(BaseCommand):
    help = "Run a jiggler_gevent worker for this project (options as for `gjiggler worker`, over settings.JIGGLER)."
    requires_system_checks: list[str] = []

    def run_from_argv(self, argv: list[str]) -> None:
        # Django's parser would take the worker's -v and -q; hand everything to the worker's own parser.
        exec_worker(*split_django_options(argv[2:]))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker_args", nargs=argparse.REMAINDER, help="gjiggler worker options")

    def handle(self, *args: Any, **options: Any) -> None:
        exec_worker(options["worker_args"])
