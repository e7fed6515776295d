"""Connections and blocking commands: waits longer than the socket timeout end as promised (connect.py's rule)."""

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from jiggler_gevent import api, connect, limits
from jiggler_gevent import client as client_mod
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.errors import EnqueueError
from tests import result_jobs
from tests.conftest import wait_for

LONG = connect.SOCKET_TIMEOUT + 1.5  # each wait below outlasts one socket timeout


def test_no_command_may_block_as_long_as_the_socket_timeout():
    assert connect.MAX_BLOCK <= connect.SOCKET_TIMEOUT / 2
    assert connect.block_for(60) == connect.MAX_BLOCK and connect.block_for(0.5) == 0.5
    assert connect.block_for(0) > 0 and connect.block_for(-1) > 0  # 0 would block forever


def _timed(results: dict, name: str, fn: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        try:
            outcome: object = ("returned", fn())
        except BaseException as exc:  # the test compares what each wait raised
            outcome = (type(exc), str(exc))
        results[name] = (outcome, time.monotonic() - started)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_waits_longer_than_the_socket_timeout_end_as_promised(ns, r, tkey, start_worker):
    """A limiter's wait, result() with and without a timeout, and wait_replicas' WAIT, each 1.5 s longer than the
    socket timeout, run side by side; the worker's cancel listener stays subscribed all the while."""
    worker = start_worker("-r", "tests.result_jobs", "-c", "3")
    limiter = limits.concurrent("long", 1, lock_timeout=60, wait_timeout=LONG)
    token = limiter.acquire()
    slow = result_jobs.nap_then_give.enqueue(tkey("slow"), LONG, "late")
    never = result_jobs.give.set(queue="nobody-reads-this").enqueue(tkey("never"), 1)
    durable = client_mod.Client(dataclasses.replace(ns, extra={"wait_replicas": 1, "wait_timeout": LONG}))
    payload = payload_mod.build(result_jobs.give.name, [tkey("x"), 1], queue="nobody-reads-this")
    results: dict = {}
    threads = [
        _timed(results, "limiter", limiter.acquire),
        _timed(results, "result", lambda: api.Job(slow).result()),
        _timed(results, "result(timeout)", lambda: api.Job(never).result(timeout=LONG)),
        _timed(results, "wait_replicas", lambda: durable.push(payload)),  # the test Redis has no replica
    ]
    for thread in threads:
        thread.join(LONG + 10)
    limiter.release(token)
    outcomes = {name: outcome for name, (outcome, _) in results.items()}
    assert outcomes["limiter"][0] is limits.OverLimit, outcomes
    assert outcomes["result"] == ("returned", "late"), outcomes
    assert outcomes["result(timeout)"][0] is TimeoutError, outcomes  # ours, not redis.exceptions.TimeoutError
    assert outcomes["wait_replicas"][0] is EnqueueError and "acknowledged" in outcomes["wait_replicas"][1], outcomes
    for name, (_, took) in results.items():
        assert LONG - 0.1 <= took <= LONG + 3, (name, took)

    cancelled = result_jobs.sleep_long.enqueue(tkey("cancel"), 60)  # the listener's connection was idle for LONG s
    wait_for(lambda: r.llen(tkey("cancel")) == 1, 15, "the long job started")
    assert api.Job(cancelled).cancel()
    wait_for(lambda: api.Job(cancelled).status == "cancelled", 10, "the running job cancelled")
    assert worker.stop() == 0
    out = worker.output()
    assert "lost the cancellation channel" not in out and "Timeout reading" not in out, out[-3000:]


@pytest.mark.parametrize("timeout", [0.3, 4.5])
def test_wait_replicas_waits_its_whole_timeout_in_blocks(ns, timeout):
    durable = client_mod.Client(dataclasses.replace(ns, extra={"wait_replicas": 1, "wait_timeout": timeout}))
    started = time.monotonic()
    with pytest.raises(EnqueueError, match=r"only 0 of 1 replica\(s\) acknowledged"):
        durable.push(payload_mod.build("x", [], queue="nobody-reads-this"))
    assert timeout <= time.monotonic() - started <= timeout + 1
