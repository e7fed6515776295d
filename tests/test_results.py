"""Results and status (`result_ttl`, api.Job): values round-trip, failures and timeouts raise, each status is
seen in turn, a non-JSON return value fails the job, result() blocks cooperatively under gevent and plainly
outside it, results expire, and jobs without result_ttl are still found while they wait or run.

Workers are `gjiggler worker` subprocesses on a fresh namespace (`-r tests.result_jobs`); timing bounds are
hang detectors, not measurements.
"""

import json
import math
import subprocess
import sys
import threading
import time

import pytest

from jiggler_gevent import api, connect, job
from jiggler_gevent import payload as payload_mod
from tests import result_jobs
from tests.conftest import ROOT, wait_for

LOAD = ("-r", "tests.result_jobs")
FAST_POLL = ("--poll-interval", "0.2")


def _runs(r, key: str) -> int:
    return r.lrange(key, 0, -1).count("run")


def _status_becomes(jid: str, status: str, timeout: float = 15) -> None:
    job_ = api.Job(jid)
    seen: list[str] = []

    def check() -> bool:
        seen.append(job_.status)
        return seen[-1] == status

    try:
        wait_for(check, timeout, f"status {status!r} of {jid}")
    except AssertionError:
        raise AssertionError(f"status of {jid} never became {status!r}; last seen {seen[-5:]}") from None


VALUES = [
    42,
    -7.25,
    "text é ✓",
    None,
    True,
    [],
    {},
    [1, "a", None, [2.5, {"k": False}]],
    {"a": [1, {"b": 2}], "c": None, "ünï": "x"},
]


def test_results_round_trip_json_values_and_info(ns, r, tkey, start_worker):
    key = tkey("runs")
    jids = result_jobs.give.enqueue_bulk([(key, v) for v in VALUES])
    assert None not in jids
    # Pushed with their tracked status in the same step: queued before any worker exists.
    assert [api.Job(j).status for j in jids] == ["queued"] * len(VALUES)
    assert all(r.hget(ns.keys.result(j), "status") == "queued" for j in jids)
    start_worker(*LOAD, "-c", "4")
    for jid, value in zip(jids, VALUES, strict=True):
        got = api.Job(jid).result(timeout=20)
        assert got == value and type(got) is type(value), (jid, got, value)
    assert _runs(r, key) == len(VALUES)
    info = api.Job(jids[-1]).info()
    assert info["status"] == "done" and info["result"] == VALUES[-1] and info["jid"] == jids[-1]
    assert info["started_at"] <= info["updated_at"] <= time.time() + 1
    # Kept result_ttl (60 s) after the end, then gone.
    assert 0 < r.ttl(ns.keys.result(jids[0])) <= result_jobs.TTL
    assert 0 < r.ttl(ns.keys.result(jids[0]) + ":done") <= result_jobs.TTL
    # A second call reads the same result at once.
    started = time.monotonic()
    assert api.Job(jids[0]).result() == VALUES[0]
    assert time.monotonic() - started < 1


def test_a_dead_job_raises_job_failed_with_its_error(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.fail.enqueue(key, "boom 42")
    start_worker(*LOAD, "-c", "1")
    with pytest.raises(api.JobFailed) as caught:
        api.Job(jid).result(timeout=20)
    assert caught.value.error_class == "ValueError"
    assert caught.value.error_message == "boom 42"
    assert caught.value.jid == jid
    job_ = api.Job(jid)
    assert job_.status == "dead"
    info = job_.info()
    assert (info["error_class"], info["error_message"]) == ("ValueError", "boom 42")
    assert [e.jid for e in api.DeadSet()] == [jid]
    assert _runs(r, key) == 1


def test_result_raises_timeout_error_when_the_job_does_not_end_in_time(ns, r, tkey, start_worker):
    key = tkey("runs")
    waiting = result_jobs.give.enqueue(key, 1)  # no worker yet: it stays queued
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        api.Job(waiting).result(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    with pytest.raises(TimeoutError):
        api.Job(waiting).result(timeout=0)
    running = result_jobs.nap_then_give.enqueue(key, 30, "late")
    start_worker(*LOAD, "-c", "2")
    assert api.Job(waiting).result(timeout=20) == 1
    wait_for(lambda: _runs(r, key) == 2, 20, "the long job to start")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        api.Job(running).result(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert api.Job(running).status == "running"


def test_status_goes_scheduled_queued_running_done(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.nap_then_give.set(queue="later").enqueue_in(0.5, key, 1.0, {"ok": 1})
    job_ = api.Job(jid)
    assert job_.status == "scheduled"
    assert r.hget(ns.keys.result(jid), "status") == "scheduled"
    # A worker on another queue moves it to its queue when due (any poller does), but does not run it.
    start_worker(*LOAD, "-q", "elsewhere", *FAST_POLL)
    _status_becomes(jid, "queued")
    assert _runs(r, key) == 0
    start_worker(*LOAD, "-q", "later")
    _status_becomes(jid, "running")  # read from the working list, from the fetch on
    # The stored status is written when the job starts, a moment after the fetch.
    wait_for(lambda: r.hget(ns.keys.result(jid), "status") == "running", 10, "the stored status running")
    assert job_.result(timeout=20) == {"ok": 1}
    assert job_.status == "done"
    assert r.lrange(key, 0, -1) == ["run", "end"]


def test_status_retrying_then_dead_and_result_waits_through_the_retry(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.fail.set(retries=1).enqueue(key, "not yet")
    start_worker(*LOAD, "-c", "1", *FAST_POLL)
    _status_becomes(jid, "retrying")
    assert r.hget(ns.keys.result(jid), "status") == "retrying"
    with pytest.raises(TimeoutError):  # a retry is not an end
        api.Job(jid).result(timeout=0.3)
    [entry] = list(api.RetrySet())
    assert entry.jid == jid and entry.error_class == "ValueError"
    assert entry.retry()  # due now: runs again, and fails for good
    with pytest.raises(api.JobFailed) as caught:
        api.Job(jid).result(timeout=20)
    assert (caught.value.error_class, caught.value.error_message) == ("ValueError", "not yet")
    assert api.Job(jid).status == "dead"
    assert _runs(r, key) == 2 and r.zcard(ns.keys.retry) == 0


def test_a_return_value_that_is_not_json_fails_the_job_with_type_error(ns, r, tkey, start_worker):
    key = tkey("runs")
    dead = result_jobs.give_a_set.enqueue(key)
    retrying = result_jobs.give_a_set.set(retries=2).enqueue(key)
    tuple_ = result_jobs.give.enqueue(key, [1, 2])  # control: a list is fine
    start_worker(*LOAD, "-c", "3")
    with pytest.raises(api.JobFailed) as caught:
        api.Job(dead).result(timeout=20)
    assert caught.value.error_class == "TypeError"
    assert "set" in caught.value.error_message and result_jobs.give_a_set.name in caught.value.error_message
    assert "JSON" in caught.value.error_message
    assert api.Job(dead).status == "dead"
    [buried] = [payload_mod.decode(x) for x in r.zrange(ns.keys.dead, 0, -1)]
    assert buried["jid"] == dead and buried["error_class"] == "TypeError"
    # As any failure: retried while it has retries left.
    _status_becomes(retrying, "retrying")
    [entry] = list(api.RetrySet())
    assert entry.jid == retrying and entry.error_class == "TypeError"
    assert api.Job(tuple_).result(timeout=20) == [1, 2]
    assert "result" not in r.hgetall(ns.keys.result(dead))


def test_result_inside_a_gevent_patched_process_does_not_block_the_hub(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.nap_then_give.enqueue(key, 1.5, ["from", "gevent"])
    code = f"""
from gevent import monkey; monkey.patch_all()
import json, time, gevent
from jiggler_gevent import api, configure
configure(redis_url={ns.url!r}, namespace={ns.namespace!r})
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.02)
t = gevent.spawn(ticker)
gevent.sleep(0.1)
print("waiting", flush=True)
start = time.monotonic()
value = api.Job({jid!r}).result(timeout=30)
end = time.monotonic()
t.kill()
during = [x for x in ticks if start <= x <= end]
gaps = [b - a for a, b in zip(during, during[1:])]
print(json.dumps({{"value": value, "waited": end - start, "ticks": len(during), "max_gap": max(gaps)}}))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
        start_worker(*LOAD, "-c", "1")  # only now: the job cannot end before result() waits
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert report["value"] == ["from", "gevent"]
    assert report["waited"] > 1.4  # it did wait for the 1.5 s job...
    # ...while the other greenlet kept ticking: a blocked hub would tick once or twice in all, and stop for the
    # whole wait (1.4 s or more); the bounds leave room for a loaded machine, where a 20 ms sleep wakes late
    assert report["ticks"] >= report["waited"] / 0.02 / 10
    assert report["max_gap"] < 1.0, report


def test_result_outside_gevent_wakes_every_waiter_when_the_job_ends(ns, r, tkey, start_worker, monkeypatch):
    # Each wait blocks 4 s before it reads the status again (MAX_BLOCK, 2 s, lengthened here and still inside the
    # 5 s socket timeout): a waiter the job's end did not wake would return up to 4 s late, not at once.
    monkeypatch.setattr(connect, "MAX_BLOCK", 4.0)
    key = tkey("runs")
    jid = result_jobs.nap_then_give.enqueue(key, 0.5, "both")
    got: dict[int, tuple[object, float]] = {}

    def wait(index: int) -> None:
        got[index] = (api.Job(jid).result(timeout=30), time.monotonic())

    waiters = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    for t in waiters:
        t.start()
    start_worker(*LOAD, "-c", "1")
    wait_for(lambda: r.lrange(key, 0, -1) == ["run", "end"], 20, "the job to end")
    ended = time.monotonic()
    for t in waiters:
        t.join(30)
    assert sorted(got) == [0, 1] and all(value == "both" for value, _ in got.values())
    # Woken by the end, not by the next read (the job's 0.5 s ends after the worker's start-up, well inside a block)
    assert all(at - ended < 1.5 for _, at in got.values()), (got, ended)


def test_an_unknown_jid_is_unknown_and_never_raises(ns):
    job_ = api.Job("no-such-jid")
    assert job_.status == "unknown"
    assert job_.info() == {"jid": "no-such-jid", "status": "unknown"}
    assert api.Job('*[?"\\').status == "unknown"  # glob and JSON characters in a jid match nothing
    with pytest.raises(ValueError):
        job_.result(timeout=0.1)  # nothing to wait for
    assert api.Job("").status == "unknown"


BAD_TTLS = [0, -1, True, False, "x", "10", math.nan, math.inf, [5]]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
def test_a_bad_result_ttl_raises_value_error_at_the_call(ns, r, ttl):
    with pytest.raises(ValueError, match="result_ttl"):
        job(result_ttl=ttl, name=f"tests.bad_ttl_{id(ttl)}")(lambda: None)
    with pytest.raises(ValueError, match="result_ttl"):
        result_jobs.give.set(result_ttl=ttl)
    with pytest.raises(ValueError, match="result_ttl"):
        result_jobs.give.set(queue="q").set(result_ttl=ttl)
    assert r.keys(f"{ns.namespace}:*") == []  # nothing pushed


def test_good_result_ttls_are_accepted(ns):
    for ttl in (1, 0.5, 3600, 1e6, None):
        result_jobs.give.set(result_ttl=ttl)
    assert result_jobs.give.set(result_ttl=None).enqueue("k", 1) is not None


def test_the_result_expires_after_result_ttl(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.give.set(result_ttl=1).enqueue(key, "short-lived")
    start_worker(*LOAD, "-c", "1")
    assert api.Job(jid).result(timeout=20) == "short-lived"
    ended = time.monotonic()
    wait_for(lambda: api.Job(jid).status == "unknown", 10, "the result to expire")
    assert time.monotonic() - ended < 5
    assert not r.exists(ns.keys.result(jid), ns.keys.result(jid) + ":done")
    with pytest.raises(ValueError):
        api.Job(jid).result(timeout=0.1)


def test_status_of_untracked_jobs_is_found_where_they_wait_or_run(ns, r, tkey, start_worker):
    key = tkey("runs")
    untracked = {"result_ttl": None}
    scheduled = result_jobs.give.set(**untracked).enqueue_in(600, key, 1)
    queued = result_jobs.give.set(**untracked, queue="parked").enqueue(key, 1)
    running = result_jobs.sleep_long.set(**untracked).enqueue(key, 60)
    retrying = result_jobs.fail.set(**untracked, retries=2).enqueue(key, "again")
    dead = result_jobs.fail.set(**untracked).enqueue(key, "for good")
    done = result_jobs.give.set(**untracked).enqueue(key, 1)
    assert api.Job(scheduled).status == "scheduled" and api.Job(queued).status == "queued"
    assert api.Job(running).status == "queued"
    start_worker(*LOAD, "-c", "4")
    wait_for(lambda: _runs(r, key) == 4, 20, "4 runs")
    _status_becomes(running, "running")
    _status_becomes(retrying, "retrying")
    _status_becomes(dead, "dead")
    _status_becomes(done, "unknown")  # ended without result_ttl: nothing kept
    assert api.Job(scheduled).status == "scheduled" and api.Job(queued).status == "queued"
    # Only tracked jobs pay for a status key.
    assert r.keys(ns.keys.result("*")) == []
    with pytest.raises(api.JobFailed) as caught:  # the dead set still tells why
        api.Job(dead).result(timeout=1)
    assert (caught.value.error_class, caught.value.error_message) == ("ValueError", "for good")
    for jid in (done, queued, running):
        with pytest.raises(ValueError, match="result_ttl"):
            api.Job(jid).result(timeout=1)


def test_result_waits_through_the_recovery_of_a_killed_worker(ns, r, tkey, start_worker):
    key = tkey("runs")
    fast_beat = ("--heartbeat-interval", "0.2")  # presumed dead after 12 beats: 2.4 s
    jid = result_jobs.slow_first_time.enqueue(key, "second run")
    first = start_worker(*LOAD, "-c", "1", *fast_beat)
    wait_for(lambda: _runs(r, key) == 1, 20, "the first run")
    assert api.Job(jid).status == "running"
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(api.Job(jid).result(timeout=60)))
    waiter.start()
    first.kill()
    # A waiter from before the kill gets the result of the run after the recovery.
    start_worker(*LOAD, "-c", "1", *fast_beat)
    wait_for(lambda: _runs(r, key) == 2, 30, "the job run again after recovery")
    waiter.join(60)
    assert got == ["second run"]
    assert api.Job(jid).status == "done"
