"""Jobs for the partition test (`-r tests.partition_jobs`): every run leaves a file in a directory shared by all
"hosts" (network namespaces share the filesystem), so runs are counted whatever the network does.

A run's file is named `<name>@<host>@<nonce>`; it holds `start`, then `ok` or `fail` when the run ends. The host
is the worker's $JIGGLER_TEST_HOST (its namespace).
"""

import os
import time
import uuid
from pathlib import Path

from jiggler_gevent import job

HOST = os.environ.get("JIGGLER_TEST_HOST", "local")
RELEASE = "release"  # held jobs wait for this file
CUT = "cut"  # holds the name of the host that is cut off: held jobs that fail when cut fail there
HOLD_LIMIT = 60.0


class CutOff(Exception):
    """Raised by a held job that ends on the host that is cut off."""


def _start(directory: str, name: str) -> Path:
    run = uuid.uuid4().hex[:8]
    path = Path(directory) / f"{name}@{HOST}@{run}"
    written = Path(directory) / f".{run}.tmp"  # then renamed: a reader never sees the run's file empty
    written.write_text("start\n")
    written.rename(path)
    return path


def _end(path: Path, how: str) -> None:
    with path.open("a") as f:
        f.write(how + "\n")


def _hold(directory: str, name: str, fail_when_cut: bool) -> None:
    run = _start(directory, name)
    deadline = time.monotonic() + HOLD_LIMIT
    while not (Path(directory) / RELEASE).exists():
        if time.monotonic() > deadline:
            _end(run, "fail")
            raise TimeoutError(f"{name}: never released")
        time.sleep(0.02)
    cut = Path(directory) / CUT
    if fail_when_cut and cut.exists() and cut.read_text() == HOST:
        _end(run, "fail")
        raise CutOff(f"{name} failed on {HOST} while it was cut off")
    _end(run, "ok")


@job
def held(directory: str, name: str, fail_when_cut: bool) -> None:
    """Wait for the release file, then succeed, or fail (retried) if `fail_when_cut` and this host is cut off."""
    _hold(directory, name, fail_when_cut)


@job(retries=0)
def held_fragile(directory: str, name: str) -> None:
    """As `held`, failing when this host is cut off; never retried (a failure goes to the dead set)."""
    _hold(directory, name, True)


@job
def quick(directory: str, name: str, seconds: float) -> None:
    """Run for `seconds`, then succeed."""
    run = _start(directory, name)
    time.sleep(seconds)
    _end(run, "ok")


def runs(directory: str) -> dict[str, list[tuple[str, list[str]]]]:
    """Every run recorded in `directory`, by job name: (host, [events]) in no particular order."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in Path(directory).iterdir():
        if path.name.count("@") == 2:
            name, host, _ = path.name.split("@")
            found.setdefault(name, []).append((host, path.read_text().split()))
    return found
