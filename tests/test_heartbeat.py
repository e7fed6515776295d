"""Heartbeats in ProcessSet while a worker runs, gone after it stops; counters match the jobs run."""

from jiggler_gevent import api
from tests import jobs
from tests.conftest import wait_for


def test_heartbeat_visible_while_running_and_gone_after_sigterm(ns, r, start_worker, tkey):
    w = start_worker("-c", "7", "-t", "1", "-q", "default", "-q", "other", "--heartbeat-interval", "0.2")
    jobs.started_then_nap.enqueue_bulk([(tkey("hb"), 30)] * 3)
    wait_for(lambda: r.llen(tkey("hb") + ":started") == 3, 10, "3 jobs running")
    wait_for(lambda: [p for p in api.ProcessSet() if p.busy == 3], 10, "a heartbeat showing 3 busy")
    [proc] = list(api.ProcessSet())
    assert proc.pid == w.pid and proc.concurrency == 7 and proc.queues == ["default", "other"]
    assert proc.rss > 10_000_000 and len(proc.jobs) == 3
    assert {j["payload"]["name"] for j in proc.jobs} == {"tests.jobs.started_then_nap"}
    ttl = r.pttl(ns.keys.process(proc.identity))
    assert 0 < ttl <= 2400
    stats = api.Stats()
    assert stats.processes == 1 and stats.busy == 3
    w.signal(15)
    assert w.proc.wait(30) == 0
    assert len(api.ProcessSet()) == 0
    assert not r.exists(ns.keys.process(proc.identity), ns.keys.work(proc.identity))


def test_counters_match_the_jobs_run(ns, r, start_worker, tkey):
    jobs.record.enqueue_bulk([(tkey("c"), "x")] * 40)
    for _ in range(3):
        jobs.always_fail.enqueue(tkey("f"))
    w = start_worker("-c", "5")
    wait_for(lambda: r.llen(tkey("c")) == 40 and r.zcard(ns.keys.dead) == 3, 15, "43 runs")
    assert w.stop() == 0
    stats = api.Stats()
    assert (stats.processed, stats.failed, stats.dead_size) == (43, 3, 3)
    history = stats.history(2)
    assert history["processed"][-1] == 43 and history["failed"][-1] == 3
