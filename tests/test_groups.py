"""Fair groups within a queue: round-robin across groups (the queue's ungrouped jobs taking part as one more group),
`group_concurrency` across every worker, recovery of a grouped job, bad input; on real Redis and real workers."""

import hashlib
import json
import signal
import subprocess
import sys

import pytest

from jiggler_gevent import api, config, job, limits, scripts, testing
from jiggler_gevent.server.recovery import Recovery
from jiggler_gevent.web import create_app
from tests import group_jobs, jobs
from tests.conftest import ROOT, identity_of, wait_for
from tests.test_web import Browser

LOAD = ("-r", "tests.group_jobs")
FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2")  # a SIGKILLed worker is presumed dead after 2.4 s


def _value(raw: str) -> str:
    return json.loads(raw)["args"][-1]


def test_the_fetch_takes_one_job_per_group_in_turn_with_the_ungrouped_jobs_as_one_more(make_fetch, ns, tkey):
    key = tkey("turns")
    for i in range(30):
        group_jobs.tenant_record.enqueue(key, "big", f"big{i}")
    for i in range(3):
        group_jobs.tenant_record.enqueue(key, "small", f"small{i}")
    jobs.record.enqueue(key, "plain0")
    jobs.record.set(group="other").enqueue(key, "other0")
    assert api.Queue("default").groups() == {"big": 30, "small": 3, "other": 1}
    assert len(api.Queue("default")) == 35 and api.Stats().queues == {"default": 35}
    fetch = make_fetch([("default", 1)])
    taken = [_value(raw) for raw in fetch.take(4) + fetch.take(4) + fetch.take(2)]
    assert taken[:9] == ["big0", "small0", "other0", "plain0", "big1", "small1", "big2", "small2", "big3"]
    assert taken[9] == "big4" and fetch.arranged
    assert api.Queue("default").groups() == {"big": 25}


def test_the_queue_lists_its_jobs_in_the_order_the_fetch_takes_them(make_fetch, ns, tkey):
    key = tkey("listed-order")
    jobs.record.set(priority=-5).enqueue(key, "low")
    for tenant, n in (("big", 12), ("small", 3), ("other", 1)):
        group_jobs.tenant_record.enqueue_bulk([(key, tenant, f"{tenant}{i}") for i in range(n)])
    jobs.record.enqueue_bulk([(key, "plain0"), (key, "plain1")])
    jobs.record.set(priority=5).enqueue(key, "high")
    queue = api.Queue("default")
    listed = [_value(e.raw) for e in queue]
    windows = [_value(e.raw) for start in range(0, 20, 3) for e in queue.page(start, 3)]
    fetch = make_fetch([("default", 1)])
    taken = [_value(raw) for _ in range(20) for raw in fetch.take(1)]
    assert taken[:8] == ["high", "big0", "small0", "other0", "plain0", "big1", "small1", "plain1"]
    assert listed == windows == taken and len(taken) == 20


def test_bad_groups_are_refused_at_enqueue_and_push_nothing(ns, r):
    def raising(key, tenant, value):
        raise KeyError("no tenant")

    for bad in ("", 42, b"t", "x" * 501):
        with pytest.raises(ValueError, match="a group must be a non-empty string"):
            jobs.record.set(group=bad)
    refused = {
        "raised KeyError": job(name="tests.raising", group_by=raising)(group_jobs.tenant_record.func),
        "must return a non-empty string": job(name="tests.int_group", group_by=lambda k, t, v: 7)(
            group_jobs.tenant_record.func
        ),
    }
    for message, grouped in refused.items():
        with pytest.raises(ValueError, match=message):
            grouped.enqueue("k", "t", "v")
        with pytest.raises(ValueError, match=message):
            grouped.enqueue_bulk([("k", "t", "v")])
    with pytest.raises(ValueError, match="group_by must be a callable"):
        job(group_by="tenant")(lambda: None)
    for bad_n in (0, True, 1.5):
        with pytest.raises(ValueError, match="group_concurrency must be an int >= 1"):
            job(group_concurrency=bad_n)(lambda: None)
    with pytest.raises(ValueError, match="concurrency or group_concurrency"):
        job(concurrency=2, group_concurrency=1)(lambda: None)
    with pytest.raises(ValueError, match="a priority or a group, not both"):
        jobs.record.set(group="t", priority=3)
    with pytest.raises(ValueError, match="a priority or a group, not both"):
        group_jobs.tenant_record.set(priority=3).enqueue("k", "t", "v")
    with pytest.raises(ValueError, match="debounced job cannot have a group"):
        jobs.record.set(debounce=5, group="t")
    assert api.Stats().enqueued == 0 and not r.exists(ns.keys.seq)


def test_a_group_is_refused_on_the_sidekiq_wire(redis_url):
    config.configure(url=redis_url, namespace="group-sidekiq", wire="sidekiq")
    try:
        with pytest.raises(ValueError, match="Sidekiq reads only the queue's list"):
            group_jobs.tenant_record.enqueue("k", "t", "v")
        assert api.Stats().enqueued == 0
    finally:
        config.reset()


def test_a_group_with_300_waiting_jobs_does_not_delay_another_groups_5_beyond_round_robin(ns, r, tkey, start_worker):
    key = tkey("fair")
    api.Queue("default").pause()
    group_jobs.tenant_record.enqueue_bulk([(key, "big", str(i)) for i in range(300)])
    group_jobs.tenant_record.enqueue_bulk([(key, "small", str(i)) for i in range(5)])
    start_worker(*LOAD, "-c", "1", *FAST)
    api.Queue("default").resume()
    wait_for(lambda: r.llen(key) == 305, 60, "the 305 jobs")
    order = r.lrange(key, 0, -1)
    assert order[:10] == [f"{tenant}:{i}" for i in range(5) for tenant in ("big", "small")]
    assert order[10:] == [f"big:{i}" for i in range(5, 300)]


def _enqueue_plain_a_b_plain(key: str) -> None:
    jobs.record.enqueue(key, "x1")
    group_jobs.tenant_record.enqueue_bulk([(key, "a", str(i)) for i in range(6)])
    group_jobs.tenant_record.enqueue_bulk([(key, "b", str(i)) for i in range(2)])
    jobs.record.enqueue(key, "x2")


def test_fake_drain_starts_groups_in_the_order_a_worker_does(ns, r, tkey, start_worker):
    faked, worked = tkey("faked"), tkey("worked")
    with testing.fake() as queue:
        _enqueue_plain_a_b_plain(faked)
        assert queue.drain() == 10
    # the ungrouped jobs join the rotation at the first fetch, behind the groups pushed before it
    expected = ["a:0", "b:0", "x1", "a:1", "b:1", "x2", "a:2", "a:3", "a:4", "a:5"]
    assert r.lrange(faked, 0, -1) == expected
    api.Queue("default").pause()
    _enqueue_plain_a_b_plain(worked)
    start_worker(*LOAD, "-c", "1", *FAST)
    api.Queue("default").resume()
    wait_for(lambda: r.llen(worked) == 10, 60, "the worker ran the 10 jobs")
    assert r.lrange(worked, 0, -1) == expected


def test_fake_drain_puts_a_group_a_job_enqueues_at_the_back_of_the_rotation(ns, r, tkey):
    key = tkey("joined")
    with testing.fake() as queue:
        group_jobs.tenant_record.enqueue_bulk([(key, "a", "0"), (key, "a", "1")])
        group_jobs.tenant_spawn.enqueue(key, "b", "s")
        assert queue.drain() == 4
    assert r.lrange(key, 0, -1) == ["a:0", "b:s", "a:1", "new:s"]


def _most_at_once(events: list[str], tenant: str | None = None) -> int:
    """The most runs (of `tenant`, or of all) that had started and not ended at any point of `events`."""
    running = most = 0
    for event in events:
        what, who = event.split(" ", 1)
        if tenant is None or who == tenant:
            running += 1 if what == "start" else -1
            most = max(most, running)
    return most


def test_group_concurrency_1_never_overlaps_across_two_worker_processes(ns, r, tkey, start_worker):
    key = tkey("overlap")
    tenants = ("t1", "t2", "t3")
    api.Queue("default").pause()
    group_jobs.tenant_nap.enqueue_bulk([(key, t, 0.1) for _ in range(6) for t in tenants])
    for _ in range(2):
        start_worker(*LOAD, "-c", "5", *FAST)
    wait_for(lambda: api.Stats().processes == 2, 30, "both workers up")
    api.Queue("default").resume()
    wait_for(lambda: r.llen(key) == 36, 60, "the 18 runs started and ended")
    events = r.lrange(key, 0, -1)
    assert [_most_at_once(events, t) for t in tenants] == [1, 1, 1], events
    assert _most_at_once(events) > 1  # the groups ran beside each other
    # each given back, with its job's outcome: after the job's last event, so polled
    wait_for(lambda: _slots_held(r, ns) == 0, 30, "the slots given back")


def _slots_held(r, ns) -> int:
    """The slots of the groups' limiters held now (their sorted sets; the `:free` lists beside them left out)."""
    return sum(r.zcard(k) for k in r.keys(f"{ns.keys.limit_prefix}group.*") if not k.endswith(":free"))


def _group_limiter(ns, group: str) -> str:
    """The name the fetch gives the limiter of `group` of the queue "default" (fetch.lua)."""
    return "group." + hashlib.sha1(f"{ns.keys.queue('default')}\n{group}".encode()).hexdigest()


def test_a_groups_limiter_is_listed_with_its_slot_in_use_as_soon_as_the_fetch_takes_it(ns, r, tkey, start_worker):
    key = tkey("listed")
    name = _group_limiter(ns, "acme")
    start_worker(*LOAD, "-c", "2", *FAST)
    group_jobs.tenant_wait.enqueue(key, "acme")
    wait_for(lambda: r.lrange(key, 0, -1) == ["started"], 30, "the job started")
    # listed long before the first renewal of the slot (SLOT_TIMEOUT / 3 = 20 s), which used to be what listed it
    listed = wait_for(lambda: api.Limits().get(name), 5, "the group's limiter listed")
    assert (listed.kind, listed.size, listed.in_use) == ("concurrent", 1, 1)
    r.set(key + ":open", "1")
    # unlisted with its last slot, so a queue with very many groups does not list them all (issue 30)
    wait_for(lambda: api.Limits().get(name) is None, 30, "the group's limiter unlisted with its slot given back")
    assert not r.hexists(ns.keys.limits, name)


def test_a_groups_limiter_stays_listed_until_its_last_slot_is_given_back(ns, r, tkey, start_worker):
    keys, name = (tkey("first"), tkey("second")), _group_limiter(ns, "acme")
    start_worker(*LOAD, "-c", "3", *FAST)
    for key in keys:
        group_jobs.tenant_wait_two.enqueue(key, "acme")
    wait_for(lambda: all(r.lrange(key, 0, -1) == ["started"] for key in keys), 30, "both runs started")
    assert api.Limits().get(name).in_use == 2
    r.set(keys[0] + ":open", "1")
    wait_for(lambda: api.Limits().get(name).in_use == 1, 30, "the first run's slot given back, the limiter listed")
    r.set(keys[1] + ":open", "1")
    wait_for(lambda: api.Limits().get(name) is None, 30, "the group's limiter unlisted with its last slot")


def test_a_release_unlists_a_groups_limiter_left_with_expired_slots_only_and_never_a_named_one(ns, r):
    group = _group_limiter(ns, "acme")
    for name in (group, "group.acme", "c"):
        limiter = limits.concurrent(name, 3)
        token = limiter.acquire()
        r.zadd(ns.keys.limit(name), {"expired-holder": 1})  # a holder that died, not yet swept
        assert api.Limits().get(name).in_use == 1
        limiter.release(token)
    # in use as api.Limits counts it (unexpired, on Redis' clock): the expired holder does not keep it listed
    assert {x.name: x.in_use for x in api.Limits()} == {"group.acme": 0, "c": 0}
    assert set(r.hkeys(ns.keys.limits)) == {"group.acme", "c"}


def test_a_groups_limiter_whose_slots_all_expired_unreleased_is_not_listed(ns, r):
    # a worker killed while its holds record had expired: nobody releases the slot, it only times out
    group = _group_limiter(ns, "acme")
    for name in (group, "group.acme"):
        limits.concurrent(name, 2, lock_timeout=0.05).acquire()
    wait_for(lambda: not api.Limits().get("group.acme").in_use, 10, "the slots to expire")
    assert r.hexists(ns.keys.limits, group), "still in the registry: no release unlisted it"
    assert {x.name: x.in_use for x in api.Limits()} == {"group.acme": 0}


def test_a_grouped_job_recovered_from_a_sigkilled_worker_goes_back_to_its_group(ns, r, tkey, start_worker):
    key = tkey("killed")
    first = start_worker(*LOAD, "-c", "1", *FAST)
    wait_for(lambda: identity_of(r, ns, first.pid), 30, "the first worker's heartbeat")
    identity = identity_of(r, ns, first.pid)
    group_jobs.tenant_nap.enqueue(key, "acme", 60)
    wait_for(lambda: r.lrange(key, 0, -1) == ["start acme"], 30, "the job started")
    assert api.Limits().get(_group_limiter(ns, "acme")).in_use == 1
    api.Queue("default").pause()  # the recovered job then waits where it was put back
    first.signal(signal.SIGKILL)
    start_worker(*LOAD, "-c", "1", *FAST)
    wait_for(lambda: r.llen(ns.keys.working(identity)) == 0, 30, "the killed worker's job recovered")
    wait_for(lambda: api.Queue("default").groups() == {"acme": 1}, 30, "the job back in its group")
    assert r.llen(ns.keys.queue("default")) == 0
    assert _slots_held(r, ns) == 0  # its slot was given back
    assert api.Limits().get(_group_limiter(ns, "acme")) is None  # and its limiter unlisted (adopt.lua)


def test_a_processs_stop_and_its_recovery_unlist_the_groups_limiters_it_held_and_no_named_one(ns, r):
    client = config.redis_client(ns.url)
    s, k = scripts.register(client), ns.keys
    for identity, group in (("stopping", "acme"), ("dead-one", "initech")):
        limits.set_holder(identity)  # as a worker process does: its slots are recorded in NS:holds:<identity>
        try:
            limits.concurrent(_group_limiter(ns, group), 1).acquire()
            limits.concurrent(f"named-{group}", 1).acquire()
        finally:
            limits.set_holder("")
    r.sadd(k.processes, "dead-one")  # no heartbeat: dead
    assert Recovery(client, k, "stopping", s).release_own() == 2  # release_holds.lua
    Recovery(client, k, "me", s).sweep()  # adopt.lua
    assert {x.name: x.in_use for x in api.Limits()} == {"named-acme": 0, "named-initech": 0}


def test_a_worker_stopped_with_a_grouped_job_running_unlists_the_groups_limiter(ns, r, tkey, start_worker):
    key, name = tkey("stopped"), _group_limiter(ns, "acme")
    worker = start_worker(*LOAD, "-c", "1", "-t", "0.5", *FAST)
    group_jobs.tenant_wait.enqueue(key, "acme")
    wait_for(lambda: r.lrange(key, 0, -1) == ["started"], 30, "the job started")
    assert api.Limits().get(name).in_use == 1
    assert worker.stop() == 0
    assert api.Queue("default").groups() == {"acme": 1}  # put back in its group, unrun
    assert api.Limits().get(name) is None


def test_groups_on_the_api_cli_and_dashboard_and_clear(ns, r, tkey):
    key = tkey("shown")
    for tenant, n in (("acme", 3), ("initech", 1)):
        group_jobs.tenant_record.enqueue_bulk([(key, tenant, str(i)) for i in range(n)])
    assert api.Queue("default").groups() == {"acme": 3, "initech": 1}
    command = [sys.executable, "-m", "jiggler_gevent", "groups", "default", "--json"]
    command += ["--redis-url", ns.url, "--namespace", ns.namespace]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout) == {"acme": 3, "initech": 1}, out.stderr
    page = Browser(create_app()).get("/queues/default").text
    assert "data-groups>2 group(s)" in page and ">acme</td>" in page and "<b>4</b> job(s) waiting" in page
    (first,) = [e for e in api.Queue("default") if e.args[1] == "initech"]
    assert first.delete() and api.Queue("default").groups() == {"acme": 3}
    assert api.Queue("default").clear() == 3
    assert api.Queue("default").groups() == {} and not r.exists(ns.keys.groups("default"))


def test_cancelling_a_waiting_grouped_or_priority_job_takes_it_out_of_where_it_waits(ns, r, tkey):
    key = tkey("cancel")
    grouped = group_jobs.tenant_record.enqueue(key, "acme", "x")
    urgent = jobs.record.set(priority=5).enqueue(key, "y")
    kept = group_jobs.tenant_record.enqueue(key, "acme", "z")
    for jid in (grouped, urgent):
        assert api.Job(jid).status == "queued"
        assert api.Job(jid).cancel() is True
        assert api.Job(jid).status == "cancelled"
    assert [e.jid for e in api.Queue("default")] == [kept]
    assert api.Queue("default").groups() == {"acme": 1} and r.zcard(ns.keys.prio("default")) == 0
