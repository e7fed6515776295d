"""Unique jobs: one push among concurrent identical enqueues, and each way the lock is released or kept."""

import json
import subprocess
import sys
import time

import pytest

from jiggler_gevent import api, job
from tests import limit_jobs
from tests.conftest import ROOT, wait_for

LOAD = ("-r", "tests.limit_jobs")


def _lock(r, ns, fn, *args):
    p = fn.defaults._payload(args, {})
    return r.get(ns.keys.unique(p["unique_key"]))


def test_twenty_greenlets_in_three_processes_push_exactly_one(ns, r, tkey):
    key = tkey("race")
    start_at = time.time() + 3
    code = f"""
import gevent.monkey; gevent.monkey.patch_all()
import json, time, gevent
from jiggler_gevent import configure
from tests import limit_jobs
configure(redis_url={ns.url!r}, namespace={ns.namespace!r})
limit_jobs.unique_record.enqueue("warm-up")
time.sleep(max(0, {start_at} - time.time()))
jobs = [gevent.spawn(limit_jobs.unique_record.enqueue, {key!r}) for _ in range(20)]
gevent.joinall(jobs, raise_error=True)
print(json.dumps([g.value for g in jobs]))
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    jids = [j for rs in results for j in rs if j is not None]
    assert sum(len(rs) for rs in results) == 60 and len(jids) == 1
    queued = [json.loads(x) for x in r.lrange(ns.keys.queue("default"), 0, -1) if key in x]
    assert [q["jid"] for q in queued] == jids
    assert _lock(r, ns, limit_jobs.unique_record, key) == jids[0]


def test_release_on_success_and_on_death_keep_on_retry(ns, r, tkey, start_worker):
    key = tkey("paths")
    ok = limit_jobs.unique_record.enqueue(key)
    dead = limit_jobs.unique_fail.enqueue(key)
    retrying = limit_jobs.unique_fail_retry.enqueue(key)
    assert None not in (ok, dead, retrying)
    assert limit_jobs.unique_record.enqueue(key) is None
    start_worker(*LOAD, "-c", "3")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1 and r.zcard(ns.keys.retry) == 1 and r.llen(key) == 3, 20, "3 runs")
    wait_for(lambda: _lock(r, ns, limit_jobs.unique_record, key) is None, 5, "the success's lock released")
    assert _lock(r, ns, limit_jobs.unique_fail, key) is None
    assert _lock(r, ns, limit_jobs.unique_fail_retry, key) == retrying  # a retry keeps its lock
    assert limit_jobs.unique_fail_retry.enqueue(key) is None
    assert limit_jobs.unique_fail.enqueue(key) is not None


def test_release_on_start(ns, r, tkey, start_worker):
    key = tkey("start")
    assert limit_jobs.unique_start_nap.enqueue(key, 5) is not None
    assert limit_jobs.unique_start_nap.enqueue(key, 5) is None
    assert _lock(r, ns, limit_jobs.unique_start_nap, key, 5) is not None
    start_worker(*LOAD, "-c", "1")
    wait_for(lambda: r.llen(key) == 1, 20, "the job started")
    wait_for(lambda: _lock(r, ns, limit_jobs.unique_start_nap, key, 5) is None, 5, "the lock released at start")
    assert limit_jobs.unique_start_nap.enqueue(key, 5) is not None


def test_deleting_or_clearing_from_the_api_releases(ns, r, tkey):
    key = tkey("api")
    jid = limit_jobs.unique_record.enqueue_in(60, key)
    assert jid and limit_jobs.unique_record.enqueue(key) is None
    entry = api.ScheduledSet().find(jid)
    assert entry is not None and entry.delete()
    assert _lock(r, ns, limit_jobs.unique_record, key) is None
    assert limit_jobs.unique_record.enqueue(key) is not None
    assert api.Queue("default").clear() == 1
    assert limit_jobs.unique_record.enqueue_in(60, key) is not None
    assert api.ScheduledSet().clear() == 1
    assert _lock(r, ns, limit_jobs.unique_record, key) is None


def test_the_lock_lapses_at_its_ttl_counted_from_the_due_time(ns, r, tkey):
    # 2 s: the second enqueue must come before the lock lapses, which a loaded machine can delay past 0.5 s
    soon = limit_jobs.unique_record.set(unique_for=2)
    assert soon.enqueue("ttl") is not None and soon.enqueue("ttl") is None
    wait_for(lambda: soon.enqueue("ttl"), 10, "the lock to lapse")
    later = limit_jobs.unique_record.set(unique_for=10)
    assert later.enqueue_in(20, "scheduled") is not None
    p = later._payload(("scheduled",), {})
    # 30 s from the push, read a moment later (a slow moment on a loaded machine); 10 s would be counted from now
    assert 25_000 <= r.pttl(ns.keys.unique(p["unique_key"])) <= 30_000


def test_bulk_skips_duplicates_inside_and_outside_the_batch(ns, r):
    first = limit_jobs.unique_record.enqueue("b")
    jids = limit_jobs.unique_record.enqueue_bulk([("a",), ("b",), ("a",), ("c",)])
    assert first and jids[0] and jids[1] is None and jids[2] is None and jids[3]
    assert r.llen(ns.keys.queue("default")) == 3


def test_the_digest_covers_name_arguments_and_queue(ns):
    assert limit_jobs.unique_record.enqueue("d") is not None
    assert limit_jobs.unique_record.set(queue="other").enqueue("d") is not None
    assert limit_jobs.unique_record.enqueue("e") is not None
    assert limit_jobs.unique_record.enqueue(key="d") is not None


@pytest.mark.parametrize(
    "options", [{"unique_for": 0}, {"unique_for": -1}, {"unique_for": "1"}, {"unique_until": "end"}]
)
def test_bad_unique_options_raise_value_error(options):
    with pytest.raises(ValueError):
        limit_jobs.unique_record.set(**options)
    with pytest.raises(ValueError):
        job(**options)(lambda: None)


def test_unique_arguments_that_are_not_json_raise_type_error(ns, r):
    with pytest.raises(TypeError):
        limit_jobs.unique_record.enqueue(object())
    assert r.keys(ns.keys.unique("*")) == []
