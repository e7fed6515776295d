"""Limiters across real worker processes, OverLimit rescheduling, `@job(concurrency=N)`, api.Limits, bad input."""

import json
import re
import signal
import time

import pytest

from jiggler_gevent import api, config, limits
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.server.guards import job_limiter_name
from jiggler_gevent.server.retry import RetryMiddleware
from tests import limit_jobs
from tests.conftest import identity_of, wait_for

LOAD = ("-r", "tests.limit_jobs")
FAST = ("--heartbeat-interval", "0.2")  # a SIGKILLed process is presumed dead after 12 beats
EXPIRY = 0.2 * config.HEARTBEAT_TTL_BEATS  # 2.4 s
ONE = job_limiter_name(limit_jobs.one_at_a_time.name)


def _times(r, key: str) -> list[tuple[str, float]]:
    """The `start`/`end` records of limit_jobs.one_at_a_time under `key`."""
    return [(what, float(at)) for what, at in (x.split() for x in r.lrange(key, 0, -1))]


def test_concurrent_never_has_more_than_n_holders_across_4_processes(ns, r, tkey, start_worker):
    key = tkey("x")
    limit_jobs.hold_x.enqueue_bulk([(key, 0.05)] * 400)
    workers = [start_worker(*LOAD, "-c", "10") for _ in range(4)]
    wait_for(lambda: int(r.get(key + ":done") or 0) == 400, 60, "400 holds")
    assert int(r.get(key + ":max")) == 3
    # every holder released: each job counts itself done inside its `with`, so its release comes just after
    wait_for(lambda: r.zcard(ns.keys.limit("x")) == 0, 10, "every holder to be released")
    for w in workers:
        assert w.stop() == 0


def test_window_never_admits_more_than_n_in_any_window(ns, r, tkey, start_worker):
    key = tkey("w")
    limit_jobs.window_start.enqueue_bulk([(key,)] * 130)
    for _ in range(4):
        start_worker(*LOAD, "-c", "20")
    wait_for(lambda: r.llen(key) == 130, 30, "130 starts")
    assert "missing" not in r.lrange(key, 0, -1)
    starts = sorted(int(t) for t in r.lrange(key, 0, -1))  # µs on Redis' clock, as the limiter counts them
    most = max(sum(1 for t in starts[i:] if t < s + 2_000_000) for i, s in enumerate(starts))
    assert most <= 50
    assert starts[-1] - starts[0] >= 4_000_000  # 130 at 50 per 2 s: three windows at least


def test_a_killed_holder_frees_its_slot_after_lock_timeout(ns, r, tkey, start_worker):
    key = tkey("k")
    w = start_worker(*LOAD, "-c", "2")
    limit_jobs.hold_and_report.enqueue(key, 3)
    held_at = float(wait_for(lambda: r.lindex(key, 0), 20, "the slot taken"))
    w.signal(signal.SIGKILL)
    w.proc.wait(10)
    limiter = limits.concurrent("k", 1, lock_timeout=3)
    with pytest.raises(limits.OverLimit):
        limiter.acquire(wait_timeout=max(0.0, held_at + 2.5 - time.time()))
    token = limiter.acquire(wait_timeout=5)  # wakes when the dead holder's expiry passes
    freed = time.time()
    assert held_at + 2.9 <= freed <= held_at + 4
    limiter.release(token)


def test_waiters_wake_promptly_when_a_slot_is_released(ns):
    limiter = limits.concurrent("prompt", 1, wait_timeout=5)
    token = limiter.acquire()
    import threading

    woke = []
    t = threading.Thread(target=lambda: woke.append((limiter.acquire(), time.monotonic())))
    t.start()
    time.sleep(0.3)
    released = time.monotonic()
    limiter.release(token)
    t.join(5)
    assert woke and woke[0][1] - released < 0.2


def test_bucket_admits_n_per_whole_interval(ns, r):
    b = limits.bucket("b", 3, per=1)
    wait_for(lambda: (time.time() % 1) < 0.5, 2, "the first half of a second")  # the 3 below fall in one interval
    for _ in range(3):
        b.acquire()
    with pytest.raises(limits.OverLimit):
        b.acquire()
    started = time.monotonic()
    b.acquire(wait_timeout=2)  # the next interval
    assert time.monotonic() - started < 1.1


def test_over_limit_reschedules_without_using_a_retry(ns, r, tkey, start_worker):
    key = tkey("over")
    start_worker(*LOAD, "-c", "2", "--poll-interval", "0.2")
    limit_jobs.over_limit.enqueue(key)
    wait_for(lambda: r.zcard(ns.keys.schedule) == 1, 20, "the job rescheduled")
    ((raw, due),) = r.zrange(ns.keys.schedule, 0, -1, withscores=True)
    p = json.loads(raw)
    assert p["reschedules"] == 1 and "retry_count" not in p and "error_class" not in p
    assert 2 <= due - time.time() <= 3.1
    assert r.zcard(ns.keys.retry) == 0 and r.zcard(ns.keys.dead) == 0
    wait_for(lambda: r.llen(key) == 2, 10, "the second run")
    wait_for(
        lambda: r.zcard(ns.keys.schedule) == 1 and json.loads(r.zrange(ns.keys.schedule, 0, 0)[0])["reschedules"] == 2,
        10,
        "a second reschedule",
    )


def test_the_21st_over_limit_fails_the_job(ns, r, tkey, start_worker):
    key = tkey("over21")
    p = payload_mod.build(limit_jobs.over_limit.name, [key], retries=0)
    p["reschedules"] = limits.MAX_RESCHEDULES
    r.lpush(ns.keys.queue("default"), payload_mod.encode(p))
    start_worker(*LOAD, "-c", "2")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1, 20, "the job dead")
    dead = json.loads(r.zrange(ns.keys.dead, 0, 0)[0])
    assert dead["error_class"] == "OverLimit" and dead["reschedules"] == limits.MAX_RESCHEDULES
    assert r.zcard(ns.keys.schedule) == 0


def test_reschedule_delay_grows_to_five_minutes():
    delays = [limits.reschedule_delay(k) for k in range(limits.MAX_RESCHEDULES)]
    assert 2 <= delays[0] <= 3 and 3.2 <= delays[1] <= 4.2
    assert all(a < b or b == 300 for a, b in zip(delays, delays[1:], strict=False))
    assert delays[-1] == 300


def test_job_concurrency_runs_at_most_n_at_once(ns, r, tkey, start_worker):
    key = tkey("two")
    limit_jobs.two_at_once.enqueue_bulk([(key, 0.3)] * 6)
    for _ in range(2):
        start_worker(*LOAD, "-c", "5", "--poll-interval", "0.2")
    wait_for(lambda: int(r.get(key + ":done") or 0) == 6, 60, "6 runs")
    assert int(r.get(key + ":max")) == 2
    limit = api.Limits().get(limit_jobs.two_at_once.name)
    assert limit is not None and (limit.kind, limit.size, limit.in_use) == ("concurrent", 2, 0)
    assert r.zcard(ns.keys.retry) == 0 and r.zcard(ns.keys.dead) == 0


def test_api_limits_lists_every_limiter_with_its_use(ns):
    c = limits.concurrent("c1", 4)
    token = c.acquire()
    w = limits.window("w1", 10, per=60)
    w.acquire()
    w.acquire()
    limits.bucket("b1", 5, per=3600).acquire()
    rows = {x.name: x.as_dict() for x in api.Limits()}
    assert rows == {
        "b1": {"name": "b1", "kind": "bucket", "size": 5, "per": 3600.0, "in_use": 1},
        "c1": {"name": "c1", "kind": "concurrent", "size": 4, "per": 0.0, "in_use": 1},
        "w1": {"name": "w1", "kind": "window", "size": 10, "per": 60.0, "in_use": 2},
    }
    c.release(token)
    assert api.Limits().get("c1").in_use == 0


def test_a_limiter_works_as_a_context_manager_outside_jobs(ns, r):
    limiter = limits.concurrent("ctx", 1)
    with limiter:
        assert r.zcard(ns.keys.limit("ctx")) == 1
        with pytest.raises(limits.OverLimit):
            with limiter:
                pass
    assert r.zcard(ns.keys.limit("ctx")) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: limits.concurrent("a", 0),
        lambda: limits.concurrent("a", 1, lock_timeout=0),
        lambda: limits.concurrent("a", 1, wait_timeout=-1),
        lambda: limits.window("a", 1, per=-1),
        lambda: limits.bucket("a", 1, per=0),
        lambda: limits.window("a:b", 1, per=1),
        lambda: limits.bucket("", 1, per=1),
        lambda: limits.concurrent("a" * 201, 1),
        lambda: limits.concurrent("a", True),
    ],
)
def test_bad_limiter_input_raises_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_retry_middleware_counts_reschedules_separately():
    from jiggler_gevent.middleware import Disposition, JobContext

    ctx = JobContext({"name": "j", "retries": 0}, "{}")
    ctx.exception = limits.OverLimit("x", "window", 0)
    RetryMiddleware(clock=lambda: 1000.0).after_process(ctx)
    assert ctx.disposition == Disposition.RESCHEDULE and 1002 <= ctx.retry_at <= 1003
    assert ctx.payload == {"name": "j", "retries": 0, "reschedules": 1}


def test_a_sigkilled_workers_concurrency_slot_is_back_within_the_heartbeats_expiry(ns, r, tkey, start_worker):
    """The slot of a job whose worker was SIGKILLed is freed by the recovery that declares the worker dead, not
    by its 60 s lock timeout: the recovered job runs again at once, in the survivor, without a reschedule."""
    key = tkey("slot")
    doomed = start_worker(*LOAD, "-c", "2", *FAST)
    limit_jobs.one_at_a_time.enqueue(key, 60)
    wait_for(lambda: r.llen(key) == 1, 20, "the job holding the slot")
    dead_identity = identity_of(r, ns, doomed.pid)
    survivor = start_worker(*LOAD, "-c", "2", *FAST, "--poll-interval", "0.2")
    wait_for(lambda: r.scard(ns.keys.processes) == 2, 20, "both heartbeats")
    doomed.kill()
    killed = time.time()
    wait_for(lambda: r.llen(key) == 2, EXPIRY + 10, "the job started again")
    restarted = _times(r, key)[1][1]
    assert restarted - killed <= EXPIRY + 1.5, restarted - killed
    assert r.lrange(key + ":pids", 0, -1) == [str(doomed.pid), str(survivor.pid)]
    assert r.zcard(ns.keys.limit(ONE)) == 1  # the re-run's slot only
    assert not r.exists(ns.keys.holds(dead_identity))
    assert "rescheduled tests.limit_jobs.one_at_a_time" not in survivor.output()  # no refusal: the slot was free


def test_a_job_refused_by_a_full_concurrency_limit_starts_when_the_slot_is_released(ns, r, tkey, start_worker):
    """The refused job is rescheduled with a growing delay, but parked on the limiter: the release wakes it."""
    first, second = tkey("first"), tkey("second")
    w = start_worker(*LOAD, "-c", "3", "--poll-interval", "0.2")
    limit_jobs.one_at_a_time.enqueue(first, 4.5)
    wait_for(lambda: r.llen(first) == 1, 20, "the first job holding the slot")
    limit_jobs.one_at_a_time.enqueue(second, 0)
    wait_for(lambda: r.llen(second) == 2, 20, "the second job run")
    ended, started = _times(r, first)[1][1], _times(r, second)[0][1]
    # Refused at 0 s and again at 2-3 s, it was next due at 5.2 s at the soonest; the release at 4.5 s woke it.
    assert 0 <= started - ended < 0.5, started - ended
    assert w.output().count("rescheduled tests.limit_jobs.one_at_a_time") >= 2  # its line per refusal (--job-log)
    assert r.llen(ns.keys.limit_parked(ONE)) == 0 and r.zcard(ns.keys.schedule) == 0


def test_a_clean_stop_gives_back_the_slots_of_the_jobs_it_stopped(ns, r, tkey, start_worker):
    key = tkey("stopped")
    w = start_worker(*LOAD, "-c", "2", "-t", "0.5")
    limit_jobs.one_at_a_time.enqueue(key, 60)
    wait_for(lambda: r.llen(key) == 1, 20, "the job holding the slot")
    assert r.zcard(ns.keys.limit(ONE)) == 1
    assert w.stop() == 0
    assert r.zcard(ns.keys.limit(ONE)) == 0  # not left to the 60 s lock timeout
    assert r.llen(ns.keys.queue("default")) == 1  # the job itself was put back


THREE = job_limiter_name(limit_jobs.three_at_once.name)
FETCH_TOKEN = re.compile(r"^[0-9a-f]{12}:\d+\.\d+$")  # a slot the fetch script took (fetch.ReliableFetch)


def test_slots_taken_by_the_fetch_keep_a_job_within_n_across_two_processes(ns, r, tkey, start_worker):
    """Payloads queued before the workers start are taken by the fetch script, which takes their slots (or parks
    them) in the same step: never more than 3 at once across both processes, each slot given back by the settle.
    Half of them are written by hand, as an older client or another producer would: the worker's own registry says
    which jobs are limited, not the payload."""
    key = tkey("three")
    limit_jobs.three_at_once.enqueue_bulk([(key, 0.02)] * 40)
    by_hand = [{"name": limit_jobs.three_at_once.name, "args": [key, 0.02], "jid": f"h{i}"} for i in range(40)]
    r.lpush(ns.keys.queue("default"), *(json.dumps(p) for p in by_hand))
    workers = [start_worker(*LOAD, "-c", "5", "--poll-interval", "0.2") for _ in range(2)]
    wait_for(lambda: int(r.get(key + ":done") or 0) == 80, 60, "80 runs")
    assert int(r.get(key + ":max")) == 3
    assert any(FETCH_TOKEN.match(t) for t in r.lrange(key + ":tokens", 0, -1))
    wait_for(lambda: r.zcard(ns.keys.limit(THREE)) == 0, 10, "every slot given back")
    assert r.zcard(ns.keys.retry) == 0 and r.zcard(ns.keys.dead) == 0 and r.zcard(ns.keys.schedule) == 0
    for w in workers:
        assert w.stop() == 0
    assert [k for k in r.scan_iter(ns.keys.holds("*"))] == []  # no slot left on any process's record


def test_a_sigkilled_workers_slot_taken_by_its_fetch_is_freed_by_its_recovery(ns, r, tkey, start_worker):
    """As for a slot the middleware took: the recovery that declares the worker dead frees the slot its fetch took
    (NS:holds:<identity>), so the job runs again at once in the survivor, not after the 60 s lock timeout."""
    key = tkey("fetched")
    limit_jobs.one_at_a_time.enqueue(key, 60)  # queued before the worker starts: its first fetch takes it
    doomed = start_worker(*LOAD, "-c", "2", *FAST)
    wait_for(lambda: r.llen(key) == 1, 20, "the job holding the slot")
    (token,) = r.zrange(ns.keys.limit(ONE), 0, -1)
    assert FETCH_TOKEN.match(token)
    dead_identity = identity_of(r, ns, doomed.pid)
    assert r.hget(ns.keys.holds(dead_identity), f"slot:{ONE}:{token}") == "1,60000"
    survivor = start_worker(*LOAD, "-c", "2", *FAST, "--poll-interval", "0.2")
    wait_for(lambda: r.scard(ns.keys.processes) == 2, 20, "both heartbeats")
    doomed.kill()
    killed = time.time()
    wait_for(lambda: r.llen(key) == 2, EXPIRY + 10, "the job started again")
    assert _times(r, key)[1][1] - killed <= EXPIRY + 1.5
    assert r.zrange(ns.keys.limit(ONE), 0, -1) != [token]  # the re-run's slot only
    assert r.zcard(ns.keys.limit(ONE)) == 1
    assert not r.exists(ns.keys.holds(dead_identity))
    assert "rescheduled tests.limit_jobs.one_at_a_time" not in survivor.output()


def test_a_backlog_the_fetch_parked_is_woken_one_job_per_release(ns, r, tkey, start_worker):
    """Twenty `concurrency=1` jobs queued before the worker starts: its fetch runs one and parks the rest, due only
    after the 60 s fallback; each release wakes the next, so they run one after another, never two at once, and all
    are done long before that fallback (a hang detector: 20 runs of 0.1 s)."""
    key = tkey("backlog")
    limit_jobs.one_at_a_time.enqueue_bulk([(key, 0.1)] * 20)
    w = start_worker(*LOAD, "-c", "5")
    wait_for(lambda: r.llen(key) == 40, 45, "20 runs, each woken by the release before it")
    times = _times(r, key)
    assert [what for what, _ in times] == ["start", "end"] * 20  # one at a time
    assert "rescheduled tests.limit_jobs.one_at_a_time" not in w.output()  # parked by the fetch, not run and refused
    assert r.zcard(ns.keys.schedule) == 0 and r.zcard(ns.keys.limit(ONE)) == 0
