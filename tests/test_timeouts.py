"""Job timeouts (timeouts.py): a job past its timeout is stopped, I/O-bound or CPU-bound, counts as failed,
frees its slot, and the exception never lands where it would leave a lock held or a connection broken.
Workers run as subprocesses (`gjiggler worker -r tests.jobs`); timing bounds are hang detectors.
"""

import json
import re
import time
import uuid

from jiggler_gevent import payload as payload_mod
from tests import jobs
from tests.conftest import wait_for


def _key(ns, name: str) -> str:
    return f"{ns.namespace}:{name}:{uuid.uuid4().hex[:6]}"


def _entries(r, key: str) -> list:
    return [payload_mod.decode(raw) for raw in r.zrange(key, 0, -1)]


def _stopped_by_timeout(r, ns, start_worker, job, seconds: float) -> None:
    worker = start_worker("-c", "1")
    key, after = _key(ns, "slow"), _key(ns, "after")
    job.enqueue(key, seconds)
    jobs.record.enqueue(after, "next")
    wait_for(lambda: r.lrange(key, 0, -1) == ["start"], 30, "the job to start")
    started = time.monotonic()
    # a hang bound: a job its timeout (0.5 s) does not stop runs 30 s; a loaded machine may take seconds to bury it
    dead = wait_for(lambda: _entries(r, ns.keys.dead), 10.0, "the timed-out job in the dead set")
    assert time.monotonic() - started < 10.0
    assert dead[0]["error_class"] == "JobTimeout", dead[0]
    assert "ran past its timeout of 0.5s" in dead[0]["error_message"]
    # Its greenlet is free: with -c 1 the next job runs.
    wait_for(lambda: r.lrange(after, 0, -1) == ["next"], 10, "the next job")
    assert r.lrange(key, 0, -1) == ["start"], "the job went on after its timeout"
    assert worker.proc.poll() is None, worker.output()


def test_a_cpu_bound_job_is_stopped_at_its_timeout(r, ns, start_worker):
    _stopped_by_timeout(r, ns, start_worker, jobs.burn_cpu, 30)


def test_an_io_bound_job_is_stopped_at_its_timeout(r, ns, start_worker):
    _stopped_by_timeout(r, ns, start_worker, jobs.slow_io, 30)


def test_a_timed_out_job_with_retries_left_goes_to_the_retry_set(r, ns, start_worker):
    start_worker("-c", "2")
    key = _key(ns, "retry")
    jid = jobs.burn_cpu.set(retries=3).enqueue(key, 30)
    retry = wait_for(lambda: _entries(r, ns.keys.retry), 10, "the job in the retry set")
    assert [e["jid"] for e in retry] == [jid]
    assert retry[0]["error_class"] == "JobTimeout" and retry[0]["retry_count"] == 0
    assert r.zcard(ns.keys.dead) == 0


def test_a_job_done_in_time_succeeds_and_its_timer_hits_nothing_after(r, ns, start_worker):
    start_worker("-c", "1")
    key, after = _key(ns, "quick"), _key(ns, "after")
    jobs.burn_cpu.enqueue(key, 0.1)
    jobs.nap.enqueue(after, 1.0)  # runs past where the first job's 0.5 s timer would have fired
    wait_for(lambda: r.llen(after), 20, "the nap after the quick job")
    assert r.lrange(key, 0, -1) == ["start", "end"]
    assert r.zcard(ns.keys.dead) == 0 and r.zcard(ns.keys.retry) == 0


def test_without_the_switcher_a_cpu_bound_job_outlives_its_timeout(r, ns, start_worker):
    # What --preempt 0 gives up (docs/preemption.md): the timer can only fire when the job yields.
    # Here it is only stopped at its first wait after the CPU loop, 3 s in.
    start_worker("-c", "1", "--preempt", "0")
    key = _key(ns, "unstoppable")
    jobs.burn_cpu_then_nap.enqueue(key, 3.0)
    wait_for(lambda: r.llen(key), 30, "the job to start")
    started = time.monotonic()
    dead = wait_for(lambda: _entries(r, ns.keys.dead), 30, "the job in the dead set")
    # measured from when the test saw it start, which a loaded machine delays: 1 s of room (a timer that could
    # fire in the CPU loop would bury it 0.5 s in)
    assert time.monotonic() - started > 2.0
    assert dead[0]["error_class"] == "JobTimeout"
    assert r.lrange(key, 0, -1) == ["start"]


def test_timeouts_firing_into_locks_logging_and_redis_leave_nothing_broken(r, ns, start_worker):
    """20 s of jobs looping over patched locks, logging and Redis calls, each stopped by its timeout."""
    concurrency = 4
    worker = start_worker("-c", str(concurrency), "--heartbeat-interval", "0.5")
    key = _key(ns, "stress")
    pushed = 0
    end = time.monotonic() + 20
    while time.monotonic() < end:
        while r.llen(ns.keys.queue("default")) < concurrency:
            jobs.stress_locks.set(timeout=0.05 + 0.05 * (pushed % 9)).enqueue(key, 10.0)
            pushed += 1
        time.sleep(0.05)
    wait_for(
        lambda: int(r.get(ns.keys.stat("failed")) or 0) >= pushed,
        60,
        f"all {pushed} stress jobs to fail by their timeout",
    )
    assert pushed >= 40, f"only {pushed} stress jobs ran in 20 s"
    assert int(r.get(key + ":calls") or 0) > 0, "the stress jobs never reached Redis"
    assert r.llen(key + ":survived") == 0, "a stress job ran 10 s: its timeout never landed"

    probe = _key(ns, "probe")
    jobs.stress_probe.enqueue(probe, 40)
    report = json.loads(wait_for(lambda: r.lindex(probe, 0), 30, "the probe's report"))
    assert report["lock_held"] is False, report
    assert report["rlock_owner"] is False, report
    assert report["handler_lock_free"] is True, report
    assert report["logging_lock_free"] is True, report
    # Every slot of the pool is back, except those the worker's own greenlets may hold at this instant
    # (the fetcher's blocking pop, the acker, the heartbeat).
    assert report["max_connections"] - report["slots"] <= 3, report
    assert report["echo_ok"] == 40, report

    after = _key(ns, "after")
    jobs.record.enqueue(after, "still working")
    wait_for(lambda: r.lrange(after, 0, -1) == ["still working"], 10, "a job after the stress")
    assert worker.stop() == 0
    out = worker.output()
    stats = re.search(r"switcher stopped: (\d+) forced yield\(s\), (\d+) exception\(s\) deferred", out)
    forced, deferred = stats.groups()
    assert int(forced) > 0 and int(deferred) > 0, "the stress did not exercise deliveries at forced yields"
    # gevent reports a greenlet that died of an exception, or an exception raised in the hub, like this:
    for sign in (" failed with ", "BlockingSwitchOutError", "LoopExit", "Exception ignored"):
        assert sign not in out, out[-3000:]


def test_a_timeout_that_finds_no_safe_point_fails_the_job_and_stops_the_worker(r, ns, start_worker):
    worker = start_worker("-c", "2", "-t", "1")
    key = _key(ns, "stuck")
    jid = jobs.stuck_in_library.enqueue(key, 6.0)  # timeout 0.3 s: stuck after max(10 x 0.3, 1) = 3 s
    wait_for(lambda: r.llen(key), 30, "the job to start")
    code = worker.proc.wait(30)
    out = worker.output()
    assert code == 0, out[-3000:]
    assert "found no point where it could be stopped safely" in out, out[-3000:]
    retry = _entries(r, ns.keys.retry)
    assert [e["jid"] for e in retry] == [jid], out[-3000:]
    assert retry[0]["error_class"] == "JobTimeout"
    assert r.llen(ns.keys.queue("default")) == 0, "the failed job was also put back in its queue"
    assert r.zcard(ns.keys.dead) == 0
    assert not [k for k in r.scan_iter(ns.keys.working("*")) if r.llen(k)], "a job is still held"
