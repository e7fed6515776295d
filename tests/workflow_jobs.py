"""Jobs for tests/test_workflows.py, run by worker subprocesses (`-r tests.workflow_jobs`).

A job that records does so under a key the test passes in (inside the test's namespace): `KEY` is a list, one
entry per run, so a test sees how many times and in which order steps ran.
"""

import time

from jiggler_gevent import config, job


def _record(key: str, what: object) -> None:
    config.redis_client().rpush(key, str(what))


@job(retries=0)
def add(*numbers: int) -> int:
    """The sum of its arguments."""
    return sum(numbers)


@job(retries=0)
def total(values: list) -> int:
    """The sum of a list (a group's results)."""
    return sum(values)


@job(retries=0)
def echo(*args: object) -> list:
    """Its arguments, as a list: what it was given."""
    return list(args)


@job(retries=0)
def record(prev: object, key: str, label: str) -> object:
    """Records `label` under `key`, passes the previous result on."""
    _record(key, label)
    return prev


@job(retries=0)
def fail(prev: object, message: str = "planned failure") -> None:
    """Fails for good (no retry)."""
    raise RuntimeError(message)


@job(retries=0)
def spin(prev: object, key: str) -> None:
    """Records its start, then burns the CPU until it is stopped."""
    _record(key, "spin")
    n = 0
    while True:
        n += 1


@job(retries=0)
def not_json(prev: object) -> set:
    """Returns a set: a result that does not survive JSON."""
    return {prev}


@job(retries=0)
def link(prev: int | None, key: str, i: int, seconds: float) -> int:
    """Step `i` of a long chain: records its start, checks it got step i-1's result, takes `seconds`."""
    _record(key, i)
    if i and prev != i - 1:
        raise AssertionError(f"step {i} got {prev!r}, not the previous step's result {i - 1}")
    time.sleep(seconds)
    return i


def plain(x: int) -> int:
    """A function not made with @job."""
    return x
