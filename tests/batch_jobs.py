"""Jobs for tests/test_batches.py, run by worker subprocesses (`-r tests.batch_jobs`).

Every job records into Redis under a key the test passes in (inside the test's namespace):
  KEY:ran       set of the members' ids that started (a run records it before it may fail)
  KEY:ok        set of the members' ids that succeeded
  KEY:runs      counter of member runs (a run twice counts twice)
  KEY:complete  list, one JSON record per run of the on_complete callback
  KEY:success   list, one JSON record per run of the on_success callback
The callbacks record what they saw when they ran (how many members had run / succeeded, how many runs there
were), so a test can tell that a callback ran after the members it waits for.
"""

import json
import os
import time

from jiggler_gevent import Batch, config, job


def _redis():
    return config.redis_client()


def _started(key: str, i: object, seconds: float = 0.0) -> None:
    if seconds:
        time.sleep(seconds)
    r = _redis()
    r.sadd(key + ":ran", str(i))
    r.incr(key + ":runs")


@job
def member(key: str, i: object, seconds: float = 0.0) -> None:
    """A batch member that succeeds."""
    _started(key, i, seconds)
    _redis().sadd(key + ":ok", str(i))


@job(retries=5)
def fails_once(key: str, i: object, seconds: float = 0.0) -> None:
    """Fails its first run, succeeds after."""
    _started(key, i, seconds)
    if _redis().hincrby(key + ":attempts", str(i), 1) == 1:
        raise RuntimeError(f"planned first failure of member {i}")
    _redis().sadd(key + ":ok", str(i))


@job(retries=0)
def dies(key: str, i: object) -> None:
    """Fails with no retry: goes to the dead set."""
    _started(key, i)
    raise RuntimeError(f"member {i} always fails")


@job(retries=0, dead=False)
def vanishes(key: str, i: object) -> None:
    """Fails with no retry and dead=False: dropped."""
    _started(key, i)
    raise RuntimeError(f"member {i} always fails and is dropped")


@job
def kills_its_worker_once(key: str, i: object) -> None:
    """Records its side effect, then, on its first run only, kills its worker outright before the ack (as SIGKILL
    would); the run after the recovery takes 0.5 s, then succeeds."""
    _started(key, i)
    if _redis().hincrby(key + ":attempts", str(i), 1) == 1:
        os._exit(9)
    time.sleep(0.5)
    _redis().sadd(key + ":ok", str(i))


@job
def adds_children(key: str, i: object, children: int, seconds: float) -> None:
    """Adds `children` members to its own batch, and enqueues one job outside any batch after the block."""
    with Batch.current():
        for c in range(children):
            member.enqueue(key, f"{i}.{c}", seconds)
    member.enqueue(key + ":outside", i)  # after the block: not a member
    _started(key, i)
    _redis().sadd(key + ":ok", str(i))


def _record(list_key: str, key: str, bid: str, extra: tuple) -> None:
    r = _redis()
    seen = {"bid": bid, "extra": list(extra), "ran": r.scard(key + ":ran"), "ok": r.scard(key + ":ok")}
    seen["runs"] = int(r.get(key + ":runs") or 0)
    r.rpush(list_key, json.dumps(dict(seen, at=time.time(), pid=os.getpid())))


@job
def on_complete(bid: str, key: str, *extra: object) -> None:
    _record(key + ":complete", key, bid, extra)


@job
def on_success(bid: str, key: str, *extra: object) -> None:
    _record(key + ":success", key, bid, extra)


def not_a_job(bid: str) -> None:
    """A plain function: not a valid callback."""
