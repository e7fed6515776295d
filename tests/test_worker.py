"""The worker as a process: delivery, queue order, concurrency, signals, SIGKILL, bad payloads."""

import json
import signal
import statistics
import time

import pytest

from jiggler_gevent import api
from tests import jobs
from tests.conftest import wait_for


def identities(r, ns):
    return r.smembers(ns.keys.processes)


def test_each_job_runs_exactly_once(ns, r, start_worker, tkey):
    jobs.record.enqueue_bulk([(tkey("runs"), str(i)) for i in range(300)])
    w = start_worker("-c", "10")
    wait_for(lambda: r.llen(tkey("runs")) == 300, 20, "300 runs")
    assert w.stop() == 0
    runs = r.lrange(tkey("runs"), 0, -1)
    assert sorted(runs, key=int) == [str(i) for i in range(300)]
    assert r.llen(ns.keys.queue("default")) == 0
    assert int(r.get(ns.keys.stat("processed"))) == 300
    assert r.get(ns.keys.stat("failed")) is None


def test_strict_order_drains_the_first_queue_first(ns, r, start_worker, tkey):
    for _i in range(10):
        jobs.record.set(queue="low").enqueue(tkey("order"), "low")
        jobs.record.set(queue="high").enqueue(tkey("order"), "high")
    w = start_worker("-c", "1", "-q", "high", "-q", "low", "--strict")
    wait_for(lambda: r.llen(tkey("order")) == 20, 20, "20 runs")
    w.stop()
    order = r.lrange(tkey("order"), 0, -1)
    assert order == ["high"] * 10 + ["low"] * 10


def test_weighted_order_favours_the_heavier_queue(ns, r, start_worker, tkey):
    jobs.record.set(queue="light").enqueue_bulk([(tkey("order"), "light")] * 200)
    jobs.record.set(queue="heavy").enqueue_bulk([(tkey("order"), "heavy")] * 200)
    w = start_worker("-c", "1", "-q", "heavy,4", "-q", "light,1")
    wait_for(lambda: r.llen(tkey("order")) >= 100, 30, "100 runs")
    w.stop()
    first = r.lrange(tkey("order"), 0, 99)
    # Expected about 80 heavy of 100; strict order would give 100, ignoring the weights 0 or 50.
    assert 60 <= first.count("heavy") < 100


def test_a_queue_the_worker_does_not_listen_to_is_left_alone(ns, r, start_worker, tkey):
    jobs.on_other_queue.enqueue(tkey("other-runs"))
    jobs.record.enqueue(tkey("default-runs"), "x")
    w = start_worker("-c", "2")
    wait_for(lambda: r.llen(tkey("default-runs")) == 1, 10, "the default job")
    w.stop()
    assert r.llen(tkey("other-runs")) == 0
    assert r.llen(ns.keys.queue("other")) == 1


def test_concurrency_runs_sleeping_jobs_side_by_side(ns, r, start_worker, tkey):
    w = start_worker("-c", "20")
    wait_for(lambda: identities(r, ns), 10, "the worker's heartbeat")
    started = time.monotonic()
    jobs.nap.enqueue_bulk([(tkey("naps"), 0.5)] * 20)
    wait_for(lambda: r.llen(tkey("naps")) == 20, 15, "20 naps")
    elapsed = time.monotonic() - started
    w.stop()
    assert elapsed < 5, f"20 x 0.5 s at -c 20 took {elapsed:.1f}s (serially 10 s)"


def test_sigkill_mid_job_leaves_the_jobs_in_redis(ns, r, start_worker, tkey):
    w = start_worker("-c", "5")
    jids = set(jobs.started_then_nap.enqueue_bulk([(tkey("held"), 30)] * 5))
    wait_for(lambda: r.llen(tkey("held") + ":started") == 5, 15, "5 jobs started")
    [identity] = identities(r, ns)
    w.kill()
    held = {json.loads(raw)["jid"] for raw in r.lrange(ns.keys.working(identity), 0, -1)}
    assert held == jids
    assert r.llen(tkey("held") + ":finished") == 0
    assert r.get(ns.keys.stat("processed")) is None


def test_sigterm_puts_unfinished_jobs_back_and_exits_0(ns, r, start_worker, tkey):
    w = start_worker("-c", "4", "-t", "1")
    jids = jobs.started_then_nap.enqueue_bulk([(tkey("term"), 60)] * 4)
    wait_for(lambda: r.llen(tkey("term") + ":started") == 4, 15, "4 jobs started")
    [identity] = identities(r, ns)
    w.signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = w.proc.wait(15)
    assert code == 0 and time.monotonic() - t0 < 1 + 5
    back = [json.loads(raw) for raw in r.lrange(ns.keys.queue("default"), 0, -1)]
    assert sorted(p["jid"] for p in back) == sorted(jids)
    assert r.llen(ns.keys.working(identity)) == 0
    assert not identities(r, ns) and not r.exists(ns.keys.process(identity))
    assert r.llen(tkey("term") + ":finished") == 0


def test_jobs_that_finish_within_the_shutdown_timeout_are_not_put_back(ns, r, start_worker, tkey):
    w = start_worker("-c", "3", "-t", "10")
    jobs.started_then_nap.enqueue_bulk([(tkey("grace"), 1.0)] * 3)
    wait_for(lambda: r.llen(tkey("grace") + ":started") == 3, 15, "3 jobs started")
    assert w.stop() == 0
    assert r.llen(tkey("grace") + ":finished") == 3
    assert r.llen(ns.keys.queue("default")) == 0


def test_sigtstp_quiets_the_worker(ns, r, start_worker, tkey):
    w = start_worker("-c", "2")
    wait_for(lambda: identities(r, ns), 10, "the heartbeat")
    w.signal(signal.SIGTSTP)
    wait_for(lambda: "quiet" in w.output(), 10, "the quiet log line")
    jobs.record.enqueue(tkey("quiet-runs"), "x")
    # The job must stay queued while the process lives on; a poll with a deadline, expecting no change.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert r.llen(tkey("quiet-runs")) == 0
        time.sleep(0.1)
    assert w.proc.poll() is None
    assert w.stop() == 0
    assert r.llen(ns.keys.queue("default")) == 1


def test_bad_payloads_go_to_the_dead_set_and_the_worker_goes_on(ns, r, start_worker, tkey):
    q = ns.keys.queue("default")
    bad = [
        "this is not json",
        "[1, 2, 3]",
        json.dumps({"jid": "j-unknown", "name": "nowhere.job", "args": []}),
        json.dumps({"jid": "j-sig", "name": "tests.jobs.record", "args": ["only-one"], "queue": "default"}),
        json.dumps({"jid": "j-args", "name": "tests.jobs.record", "args": "not a list"}),
    ]
    r.lpush(q, *bad)
    jobs.record.enqueue(tkey("after-bad"), "ok")
    w = start_worker("-c", "2")
    wait_for(lambda: r.llen(tkey("after-bad")) == 1, 10, "the good job after the bad ones")
    wait_for(lambda: r.zcard(ns.keys.dead) == 5, 10, "5 dead entries")
    assert w.proc.poll() is None
    dead = [json.loads(raw) for raw in r.zrange(ns.keys.dead, 0, -1)]
    by_raw = {d["raw"]: d for d in dead}
    assert set(by_raw) == set(bad)
    assert "not valid JSON" in by_raw[bad[0]]["error_message"]
    assert "not an object" in by_raw[bad[1]]["error_message"]
    assert "no job named 'nowhere.job'" in by_raw[bad[2]]["error_message"]
    assert "do not match" in by_raw[bad[3]]["error_message"]
    assert "'args' must be a list" in by_raw[bad[4]]["error_message"]
    assert all(d["error_class"] == "PayloadError" for d in dead)
    assert w.stop() == 0


@pytest.mark.parametrize(
    "job, error_class", [(jobs.raise_system_exit, "SystemExit"), (jobs.raise_greenlet_exit, "GreenletExit")]
)
def test_a_job_raising_an_exit_fails_alone_and_its_worker_greenlet_goes_on(ns, r, start_worker, tkey, job, error_class):
    job.set(retries=0).enqueue_bulk([(tkey("exit-runs"),)] * 3)
    jobs.record.enqueue(tkey("exit-after"), "ok")
    w = start_worker("-c", "1")  # one worker greenlet: it must survive all three to run the last job
    wait_for(lambda: r.llen(tkey("exit-after")) == 1, 10, "the job after the exits")
    assert w.proc.poll() is None
    wait_for(lambda: r.zcard(ns.keys.dead) == 3, 10, "the three exit jobs in the dead set")
    assert {json.loads(x)["error_class"] for x in r.zrange(ns.keys.dead, 0, -1)} == {error_class}
    assert w.stop() == 0
    assert r.llen(ns.keys.queue("default")) == 0  # nothing was held back and put back at the stop


def test_log_lines_carry_the_job_name_and_jid(ns, r, start_worker, tkey):
    jid = jobs.always_fail.enqueue(tkey("log-runs"))
    w = start_worker("-c", "1")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1, 10, "the failed job in the dead set")
    w.stop()
    out = w.output()
    assert f"tests.jobs.always_fail jid={jid}" in out
    assert "RuntimeError: this job always fails" in out and "Traceback" in out


def test_an_idle_worker_on_three_queues_starts_a_job_pushed_to_any_of_them_at_once(ns, r, start_worker, tkey):
    """Each push wakes the idle worker (NS:wake): without it, a job pushed to a queue the worker is not blocked on
    would wait for the next try, up to WAKE_BLOCK (1 s): nearly all of it, as each push follows the worker's block
    at once. The bounds are hang detectors, not a benchmark: a median under 0.3 s, and room for one wait a loaded
    machine delayed."""
    key = tkey("waits")
    w = start_worker("-q", "mail", "-q", "low", "-q", "default", "-c", "2")
    for n, queue in enumerate(["default", "low", "mail", "default", "low", "default", "mail", "low"]):
        wait_for(lambda: any(c["cmd"] == "bzpopmin" for c in r.client_list()), 10, "the worker idle on NS:wake")
        jobs.record_wait.set(queue=queue).enqueue(key, time.time())
        wait_for(lambda n=n: r.llen(key) == n + 1, 10, f"job {n} on {queue}")
    waits = [float(x) for x in r.lrange(key, 0, -1)]
    assert statistics.median(waits) < 0.3 and max(waits) < 2.0, waits
    assert w.stop() == 0


def test_a_quiet_worker_idle_on_one_queue_leaves_a_later_push_in_the_queue(ns, r, start_worker):
    """Idle on one queue, the fetcher waits in a BLMOVE. Quieting kills it; the BLMOVE must die with its connection,
    or Redis would still move the next job pushed into the working list of a process that no longer fetches."""
    w = start_worker("-c", "2", "--heartbeat-interval", "0.2")
    wait_for(lambda: len(api.ProcessSet()) == 1, 20, "the worker's heartbeat")
    time.sleep(0.3)  # not a synchronisation: gives the idle fetcher time to be inside its BLMOVE, the case tested
    w.signal(signal.SIGTSTP)
    wait_for(lambda: [p.info.get("quiet") for p in api.ProcessSet()] == [True], 20, "the worker heartbeating quiet")
    key = f"{ns.namespace}:t:after-quiet"
    jobs.record.enqueue(key, "x")
    time.sleep(2.5)  # longer than a BLMOVE blocks (2 s): a pending one would have taken the job by now
    assert r.llen(ns.keys.queue("default")) == 1
    assert sum(r.llen(k) for k in r.scan_iter(ns.keys.working("*"))) == 0 and r.llen(key) == 0
    assert w.stop() == 0
