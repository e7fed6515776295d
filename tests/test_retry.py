"""Back-off, retry/dead/drop decisions, the dead-set trim, and a job that fails then succeeds."""

import json
import random
import time

import pytest

from jiggler_gevent import config, payload, scripts
from jiggler_gevent.middleware import JobContext
from jiggler_gevent.server.acker import Outcome, settle
from jiggler_gevent.server.retry import RetryMiddleware, backoff
from tests import jobs
from tests.conftest import wait_for


@pytest.mark.parametrize("count", [0, 1, 2, 5, 10, 24])
def test_backoff_stays_within_the_formula(count):
    rand = random.Random(count)
    values = {backoff(count, rand) for _ in range(300)}
    low, high = count**4 + 15, count**4 + 15 + 10 * (count + 1)
    assert min(values) >= low and max(values) <= high
    assert len(values) > 5  # the jitter is really random


def ctx_for(retries=2, dead=True, retry_count=None):
    p = payload.build("tests.jobs.record", ["k", "v"], retries=retries, dead=dead)
    if retry_count is not None:
        p["retry_count"] = retry_count
    ctx = JobContext(p, payload.encode(p))
    try:
        raise ValueError("it broke")
    except ValueError as exc:
        ctx.exception = exc
    return ctx


def test_first_failure_goes_to_retry_with_error_details():
    now = 1_000_000.0
    ctx = ctx_for()
    RetryMiddleware(clock=lambda: now, rand=random.Random(1)).after_process(ctx)
    p = ctx.payload
    assert ctx.disposition == "retry" and p["retry_count"] == 0
    assert now + 15 <= ctx.retry_at <= now + 25
    assert p["error_class"] == "ValueError" and p["error_message"] == "it broke"
    assert "Traceback" in p["error_backtrace"] and p["failed_at"] == now


def test_retries_n_means_n_plus_one_runs_then_dead_or_drop():
    mw = RetryMiddleware(clock=lambda: 5.0)
    ctx = ctx_for(retries=2, retry_count=0)  # the second run failed
    mw.after_process(ctx)
    assert ctx.disposition == "retry" and ctx.payload["retry_count"] == 1
    ctx = ctx_for(retries=2, retry_count=1)  # the third run failed
    mw.after_process(ctx)
    assert ctx.disposition == "dead"
    ctx = ctx_for(retries=0)
    mw.after_process(ctx)
    assert ctx.disposition == "dead"
    ctx = ctx_for(retries=0, dead=False)
    mw.after_process(ctx)
    assert ctx.disposition == "drop"


def test_success_is_left_alone():
    ctx = ctx_for()
    ctx.exception = None
    RetryMiddleware().after_process(ctx)
    assert ctx.disposition == "ack" and "error_class" not in ctx.payload


def test_dead_set_is_trimmed_by_age_and_size(ns, r, monkeypatch):
    monkeypatch.setattr(config, "DEAD_MAX_JOBS", 5)
    now = time.time()
    script, working = scripts.register(r).settle, ns.keys.working("me")
    r.lpush(working, "held-old", *(f"held-{i}" for i in range(8)))
    settle(script, ns.keys, working, [Outcome.dead("held-old", "very-old", now - config.DEAD_MAX_AGE - 10)])
    for i in range(8):
        settle(script, ns.keys, working, [Outcome.dead(f"held-{i}", f"job-{i}", now + i)])
    assert r.zrange(ns.keys.dead, 0, -1) == [f"job-{i}" for i in range(3, 8)]


def test_a_failing_job_comes_back_and_then_succeeds(ns, r, start_worker, tkey):
    jid = jobs.fail_times.enqueue(tkey("ft"), 1)
    w = start_worker("-c", "2", "--poll-interval", "0.2")
    wait_for(lambda: r.zcard(ns.keys.retry) == 1, 10, "the job in the retry set")
    [(raw, score)] = r.zrange(ns.keys.retry, 0, -1, withscores=True)
    entry = json.loads(raw)
    assert entry["jid"] == jid and entry["retry_count"] == 0 and entry["error_class"] == "ValueError"
    assert time.time() + 5 < score < time.time() + 26
    r.zadd(ns.keys.retry, {raw: time.time()}, xx=True)  # make it due now instead of waiting 15 s
    wait_for(lambda: r.llen(tkey("ft")) == 2, 10, "the second run")
    wait_for(lambda: r.zcard(ns.keys.retry) == 0 and r.llen(ns.keys.queue("default")) == 0, 10, "an empty retry set")
    assert w.stop() == 0
    assert r.zcard(ns.keys.dead) == 0
    assert int(r.get(ns.keys.stat("processed"))) == 2 and int(r.get(ns.keys.stat("failed"))) == 1


def test_out_of_retries_goes_dead_or_vanishes(ns, r, start_worker, tkey):
    jobs.always_fail.enqueue(tkey("af"))
    jobs.fail_and_vanish.enqueue(tkey("fv"))
    w = start_worker("-c", "2")
    wait_for(lambda: r.llen(tkey("af")) == 1 and r.llen(tkey("fv")) == 1, 10, "both runs")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1, 10, "one dead job")
    assert w.stop() == 0
    [dead] = [json.loads(x) for x in r.zrange(ns.keys.dead, 0, -1)]
    assert dead["name"] == "tests.jobs.always_fail" and dead["error_message"] == "this job always fails"
    assert r.zcard(ns.keys.retry) == 0 and r.llen(ns.keys.queue("default")) == 0
