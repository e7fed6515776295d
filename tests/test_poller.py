"""The Poller (server/poller.py): scheduled and retry jobs move to their queues on time, once, whoever polls."""

import time

from jiggler_gevent import config, scripts
from jiggler_gevent.server.poller import Poller
from tests import jobs
from tests.conftest import wait_for


def test_enqueue_in_runs_after_its_time_and_not_before(ns, r, start_worker, tkey):
    w = start_worker("-c", "2", "--poll-interval", "0.2")
    wait_for(lambda: r.smembers(ns.keys.processes), 10, "the heartbeat")
    t0 = time.time()
    jobs.record.enqueue_in(1.5, tkey("later"), "x")
    jobs.record.set(queue="default").enqueue_at(t0 + 0.5, tkey("sooner"), "y")
    wait_for(lambda: r.llen(tkey("later")) == 1, 10, "the delayed job")
    ran_at = time.time()
    assert r.llen(tkey("sooner")) == 1
    assert ran_at - t0 >= 1.5
    w.stop()


def test_scheduled_jobs_keep_their_own_queue(ns, r):
    jobs.on_other_queue.enqueue_at(time.time() + 0.01, "k")
    poller = Poller(config.redis_client(ns.url), ns.keys, scripts.register(config.redis_client(ns.url)))
    assert poller.enqueue_due(now=time.time() + 1) == 1
    assert r.llen(ns.keys.queue("other")) == 1 and r.llen(ns.keys.queue("default")) == 0


def test_not_due_jobs_stay(ns, r):
    jobs.record.enqueue_in(3600, "k", "v")
    poller = Poller(config.redis_client(ns.url), ns.keys, scripts.register(config.redis_client(ns.url)))
    assert poller.enqueue_due() == 0
    assert r.zcard(ns.keys.schedule) == 1


def test_more_than_one_batch_moves_in_one_poll(ns, r):
    for i in range(250):
        jobs.record.enqueue_at(time.time() + 0.01, "k", str(i))
    poller = Poller(config.redis_client(ns.url), ns.keys, scripts.register(config.redis_client(ns.url)))
    assert poller.enqueue_due(now=time.time() + 1) == 250
    assert r.llen(ns.keys.queue("default")) == 250


def test_two_workers_polling_at_once_run_each_due_job_once(ns, r, start_worker, tkey):
    due = time.time() + 2
    for i in range(200):
        jobs.record.enqueue_at(due, tkey("runs"), str(i))
    a = start_worker("-c", "10", "--poll-interval", "0.05")
    b = start_worker("-c", "10", "--poll-interval", "0.05")
    wait_for(lambda: r.llen(tkey("runs")) >= 200, 20, "200 runs")
    # Let both keep polling a little longer so that a double move would show as extra runs.
    wait_for(lambda: time.time() > due + 1, 5, "a second of extra polling")
    assert a.stop() == 0 and b.stop() == 0
    runs = r.lrange(tkey("runs"), 0, -1)
    assert sorted(runs, key=int) == [str(i) for i in range(200)]
