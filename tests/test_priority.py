"""Priority within a queue: higher first, FIFO among equals, on real Redis and real worker processes; the payload keeps
its priority however it comes back to its queue (a retry, a put-back, a recovery after SIGKILL)."""

import json
import signal
import time

import pytest

from jiggler_gevent import api, config, job
from jiggler_gevent.keys import SidekiqKeys
from tests import jobs
from tests.conftest import identity_of, wait_for

FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2")  # a SIGKILLed worker is presumed dead after 2.4 s


MIX = [(0, "p0-a"), (-5, "m5-a"), (10, "p10-a"), (0, "p0-b"), (3, "p3-a"), (10, "p10-b"), (-5, "m5-b"), (3, "p3-b")]
IN_ORDER = ["p10-a", "p10-b", "p3-a", "p3-b", "p0-a", "p0-b", "m5-a", "m5-b"]


def _enqueue_mix(key: str, queue: str = "default") -> None:
    for priority, value in MIX:
        jobs.record.set(queue=queue, priority=priority).enqueue(key, value)


def _values(entries) -> list[str]:
    return [e.args[1] for e in entries]


def test_the_fetch_takes_higher_priorities_first_and_equals_in_enqueue_order(make_fetch, ns, tkey):
    key = tkey("order")
    _enqueue_mix(key)
    assert len(api.Queue("default")) == 8 and api.Stats().queues == {"default": 8}
    assert _values(api.Queue("default")) == IN_ORDER  # the queue reads in the order its jobs start
    assert _values(api.Queue("default").page(3, 3)) == IN_ORDER[3:6]
    fetch = make_fetch([("default", 1)])
    taken = fetch.take(3) + fetch.take(10)
    assert [json.loads(raw)["args"][1] for raw in taken] == IN_ORDER
    assert fetch.arranged and len(api.Queue("default")) == 0


def test_the_extreme_priorities_keep_their_order_and_enqueue_order(make_fetch, ns, tkey):
    key = tkey("extremes")
    pushes = [(p, f"{p}:{i}") for i in range(40) for p in (-100, 100, -99, 99, 1, -1)]
    for priority, value in pushes:
        jobs.record.set(priority=priority).enqueue(key, value)
    fetch = make_fetch([("default", 1)])
    taken = [json.loads(raw)["args"][1] for raw in fetch.take(1000)]
    assert taken == [f"{p}:{i}" for p in (100, 99, 1, -1, -99, -100) for i in range(40)]


def test_a_put_back_goes_to_the_front_of_its_priority(make_fetch, client, ns, tkey):
    key = tkey("front")
    for value in ("a", "b", "c"):
        jobs.record.set(priority=4).enqueue(key, value)
    fetch = make_fetch([("default", 1)])
    (first,) = fetch.take(1)
    jobs.record.set(priority=4).enqueue(key, "d")
    assert fetch.requeue([first]) == 1
    assert client.llen(ns.keys.queue("default")) == 0
    assert _values(api.Queue("default")) == ["a", "b", "c", "d"]


def test_a_paused_queue_gives_none_of_its_priority_jobs(make_fetch, ns, tkey):
    jobs.record.set(priority=9).enqueue(tkey("paused"), "x")
    api.Queue("default").pause()
    fetch = make_fetch([("default", 1)])
    assert fetch.take(5) == [] and fetch.paused
    api.Queue("default").resume()
    assert len(fetch.take(5)) == 1


def test_bad_priority_is_refused_at_decoration_and_enqueue_and_pushes_nothing(ns, client):
    for bad in (101, -101, 1.5, "3", True, None):
        with pytest.raises(ValueError, match="priority must be an int from -100 to 100"):
            jobs.record.set(priority=bad)
        if bad is not None:  # apply_async's None: no priority given, as in Celery
            with pytest.raises(ValueError, match="priority must be an int from -100 to 100"):
                jobs.record.apply_async(("k", "v"), priority=bad)
    with pytest.raises(ValueError, match="priority must be an int from -100 to 100"):
        job(priority=200)(lambda: None)
    assert api.Stats().enqueued == 0 and not client.exists(ns.keys.seq)


def test_apply_async_and_the_decorator_set_the_priority(ns, tkey):
    key = tkey("celery")
    urgent = job(name="tests.urgent", priority=50)(jobs.record.func)
    jobs.record.apply_async((key, "low"), priority=-1)
    jobs.record.enqueue(key, "plain")
    urgent.enqueue(key, "urgent")
    assert [(e.args[1], e.priority) for e in api.Queue("default")] == [("urgent", 50), ("plain", 0), ("low", -1)]


def test_a_priority_is_refused_on_the_sidekiq_wire_and_nothing_is_pushed(redis_url):
    cfg = config.configure(url=redis_url, namespace="prio-sidekiq", wire="sidekiq")
    try:
        assert isinstance(cfg.keys, SidekiqKeys)
        with pytest.raises(ValueError, match="Sidekiq reads only the queue's list"):
            jobs.record.set(priority=5).enqueue("k", "v")
        with pytest.raises(ValueError, match="Sidekiq reads only the queue's list"):
            jobs.record.set(priority=5).enqueue_in(60, "k", "v")
        assert api.Stats().enqueued == 0 and len(api.ScheduledSet()) == 0
    finally:
        config.reset()


def test_priority_order_with_one_worker_running_one_job_at_a_time(ns, r, tkey, start_worker):
    key = tkey("ran")
    api.Queue("default").pause()  # every job waits before the worker takes any
    _enqueue_mix(key)
    start_worker("-c", "1", *FAST)
    api.Queue("default").resume()
    wait_for(lambda: r.llen(key) == 8, 30, "the 8 jobs")
    assert r.lrange(key, 0, -1) == IN_ORDER


def test_a_priority_push_reaches_a_worker_idle_on_one_queue(ns, r, tkey, start_worker):
    """The first priority push on a namespace may find the worker blocked in BLMOVE on the list; it runs within the
    block's end, and later ones wake the worker at once (it waits on NS:wake once priorities are in use)."""
    key = tkey("idle")
    start_worker("-c", "2", *FAST)
    wait_for(lambda: any(c["cmd"] == "blmove" for c in r.client_list()), 30, "the worker idle in BLMOVE")
    jobs.record.set(priority=1).enqueue(key, "first")
    wait_for(lambda: r.llen(key) == 1, 15, "the first priority job")
    jobs.record.set(priority=-3).enqueue(key, "second")
    wait_for(lambda: r.llen(key) == 2, 15, "the second priority job")
    assert not any(c["cmd"] == "blmove" for c in r.client_list())


def test_a_retry_of_a_priority_job_comes_back_to_the_priority_set(ns, r, tkey, start_worker):
    key = tkey("retry")
    start_worker("-c", "2", *FAST)
    jobs.fail_times.set(priority=7).enqueue(key, 1)
    wait_for(lambda: len(api.RetrySet()) == 1, 30, "the first failure in the retry set")
    assert api.RetrySet().page(0, 1)[0].priority == 7
    api.Queue("default").pause()
    assert api.RetrySet().retry_all() == 1
    assert r.zcard(ns.keys.prio("default")) == 1 and r.llen(ns.keys.queue("default")) == 0
    api.Queue("default").resume()
    wait_for(lambda: r.lrange(key, 0, -1) == ["run", "run"] and len(api.Queue("default")) == 0, 30, "the retry")


def test_a_priority_job_recovered_from_a_sigkilled_worker_keeps_its_priority(ns, r, tkey, start_worker):
    key = tkey("killed")
    first = start_worker("-c", "1", *FAST)
    wait_for(lambda: identity_of(r, ns, first.pid), 30, "the first worker's heartbeat")
    identity = identity_of(r, ns, first.pid)
    jobs.started_then_nap.set(priority=8).enqueue(key, 60)
    wait_for(lambda: r.llen(key + ":started") == 1, 30, "the job started")
    api.Queue("default").pause()  # the recovered job then waits where it was put back
    first.signal(signal.SIGKILL)
    start_worker("-c", "1", *FAST)
    wait_for(lambda: r.llen(ns.keys.working(identity)) == 0, 30, "the killed worker's job recovered")
    wait_for(lambda: len(api.Queue("default")) == 1, 30, "the job back in its queue")
    (entry,) = api.Queue("default")
    assert entry.priority == 8 and r.zcard(ns.keys.prio("default")) == 1 and r.llen(ns.keys.queue("default")) == 0


def test_clearing_a_queue_clears_its_priority_jobs_too(ns, r, tkey):
    key = tkey("clear")
    _enqueue_mix(key)
    (urgent,) = [e for e in api.Queue("default") if e.args[1] == "p10-b"]
    assert urgent.delete() and len(api.Queue("default")) == 7
    assert api.Queue("default").clear() == 7
    assert len(api.Queue("default")) == 0 and not r.exists(ns.keys.prio("default"))


def test_the_dashboards_queue_page_lists_priority_jobs_first_with_their_priority(ns, tkey):
    from jiggler_gevent.web import create_app
    from tests.test_web import Browser

    web = Browser(create_app())
    _enqueue_mix(tkey("web"))
    page = web.get("/queues/default").text
    assert "<b>8</b> job(s) waiting" in page
    assert page.count("data-priority>priority 10<") == 2 and page.count("data-priority") == 6
    assert page.index("p10-a") < page.index("p0-a") < page.index("m5-b")


def _aged(priority: int, group: str | None, age: float, value: str) -> None:
    """Push a record job that has waited `age` seconds, with a priority or in a group."""
    from jiggler_gevent import payload
    from jiggler_gevent.client import Client

    p = payload.build("tests.jobs.record", ["k", value])
    p["enqueued_at"] = time.time() - age
    if priority:
        p["priority"] = priority
    if group is not None:
        p["group"] = group
    Client().push(p)


@pytest.mark.parametrize("where", ["lowest priority", "highest priority", "a priority between", "group"])
def test_latency_counts_jobs_waiting_with_a_priority_or_in_a_group(ns, client, where):
    from jiggler_gevent.server.prometheus import RedisCollector

    _aged(0, None, 10, "plain")
    _aged(5, None, 20, "mid")  # newer than the oldest below, wherever it is
    old = {
        "lowest priority": (-7, None),
        "highest priority": (9, None),
        "a priority between": (3, None),  # between 5 and -7
        "group": (0, "tenant-1"),
    }[where]
    _aged(*old, 300, "oldest")
    _aged(-7, None, 5, "low-new")
    assert 299 < api.Queue("default").latency < 330, "the oldest job is the one with a priority or a group"
    metrics = {m.name: m for m in RedisCollector(client, ns.keys).collect()}
    [sample] = [s for s in metrics["jiggler_queue_latency_seconds"].samples if s.labels["queue"] == "default"]
    assert 299 < sample.value < 330
