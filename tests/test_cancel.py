"""Cancellation (api.Job(jid).cancel()): a queued, scheduled, retrying, held or running job ends "cancelled", is
never run (again), is neither retried nor buried; a running one is stopped within the bound, also when it burns
the CPU; a recovered one is skipped; its unique lock, its concurrency slot and its batch are released/counted.

Workers are `gjiggler worker` subprocesses on a fresh namespace (`-r tests.result_jobs`). Each job records its
runs, so "never ran" is read from Redis after a later job on the same worker (`-c 1`) has run. Timing bounds are
hang detectors: the contract's bound for a running job is max(10 x preempt, 1 s), here 1 s.
"""

import json
import signal
import subprocess
import time

import pytest

from jiggler_gevent import Batch, api, config
from tests import result_jobs
from tests.conftest import ROOT, gjiggler_command, wait_for

LOAD = ("-r", "tests.result_jobs")
FAST_POLL = ("--poll-interval", "0.2")
FAST_BEAT = ("--heartbeat-interval", "0.2")  # presumed dead after 12 beats: 2.4 s
STOP_BOUND = 1.0  # max(10 x 0.1, 1) s at the default --preempt
SLACK = 2.0  # for a loaded machine: the message, the settle, our polling


def _runs(r, key: str) -> int:
    return r.lrange(key, 0, -1).count("run")


def _identities(r, ns) -> set[str]:
    return set(r.smembers(ns.keys.processes))


def _new_identity(r, ns, known: set[str]) -> str:
    """The identity of the one worker process that appears beside `known`."""
    found = wait_for(lambda: _identities(r, ns) - known, 20, "a new worker's heartbeat")
    [identity] = found
    return identity


def _cancel_listeners(r, ns) -> int:
    return dict(r.pubsub_numsub(ns.keys.cancel_channel))[ns.keys.cancel_channel]


def _nothing_left(r, ns) -> None:
    """The job left no trace where jobs wait: not queued, scheduled, retried, buried or held."""
    k = ns.keys
    assert r.zcard(k.retry) == 0 and r.zcard(k.dead) == 0 and r.zcard(k.schedule) == 0
    assert all(r.llen(k.queue(q)) == 0 for q in r.smembers(k.queues))
    assert all(r.llen(k.working(i)) == 0 for i in r.smembers(k.processes))


def _marker_runs(r, tkey, **options) -> None:
    """Enqueue a job after the cancelled one and wait for its result: the worker got past the cancelled one."""
    jid = result_jobs.give.set(**options).enqueue(tkey("marker"), "after")
    assert api.Job(jid).result(timeout=30) == "after"


def _ends_cancelled(jid: str, timeout: float = 30) -> None:
    with pytest.raises(api.JobCancelled) as caught:
        api.Job(jid).result(timeout=timeout)
    assert caught.value.jid == jid
    assert api.Job(jid).status == "cancelled"


def test_a_queued_job_cancelled_before_any_worker_never_runs(ns, r, tkey, start_worker):
    key = tkey("runs")
    tracked = result_jobs.sleep_long.enqueue(key, 0.1)
    untracked = result_jobs.sleep_long.set(result_ttl=None).enqueue(key, 0.1)
    assert api.Job(tracked).cancel() is True
    assert api.Job(untracked).cancel() is True
    assert r.llen(ns.keys.queue("default")) == 0  # taken out of its queue at once
    for jid in (tracked, untracked):
        _ends_cancelled(jid, timeout=1)
    info = api.Job(tracked).info()
    assert info["status"] == "cancelled" and info["error_class"] == "JobCancelled"
    assert 0 < r.ttl(ns.keys.result(tracked)) <= result_jobs.TTL  # kept result_ttl after its end
    assert api.Job(tracked).cancel() is False  # ended already
    start_worker(*LOAD, "-c", "1")
    _marker_runs(r, tkey)
    assert _runs(r, key) == 0
    _nothing_left(r, ns)


def test_a_scheduled_job_cancelled_never_runs(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.sleep_long.enqueue_in(0.5, key, 0.1)
    assert api.Job(jid).status == "scheduled"
    assert api.Job(jid).cancel() is True
    assert r.zcard(ns.keys.schedule) == 0
    _ends_cancelled(jid, timeout=1)
    start_worker(*LOAD, "-c", "1", *FAST_POLL)
    # A job due at the same time, then one due later, both run: the poller went past the cancelled one's time.
    result_jobs.give.enqueue_in(0.5, tkey("marker"), "same time")
    marker = result_jobs.give.enqueue_in(1.0, tkey("marker"), "later")
    assert api.Job(marker).result(timeout=30) == "later"
    assert _runs(r, key) == 0
    _nothing_left(r, ns)


def test_a_retrying_job_cancelled_in_the_retry_set_never_runs_again(ns, r, tkey, start_worker):
    key = tkey("runs")
    jid = result_jobs.fail.set(retries=3).enqueue(key, "planned")
    start_worker(*LOAD, "-c", "1", *FAST_POLL)
    wait_for(lambda: api.Job(jid).status == "retrying", 20, "the job in the retry set")
    assert api.Job(jid).cancel() is True
    assert r.zcard(ns.keys.retry) == 0
    _ends_cancelled(jid, timeout=1)
    assert api.RetrySet().find(jid) is None and api.DeadSet().find(jid) is None
    _marker_runs(r, tkey)
    assert _runs(r, key) == 1
    _nothing_left(r, ns)


@pytest.mark.parametrize("which", ["cpu-bound", "sleeping", "sleeping-untracked"])
def test_a_running_job_is_stopped_within_the_bound_and_never_runs_again(ns, r, tkey, start_worker, which):
    key = tkey("runs")
    if which == "cpu-bound":
        jid = result_jobs.spin.enqueue(key)
    elif which == "sleeping":
        jid = result_jobs.sleep_long.enqueue(key, 60)
    else:
        jid = result_jobs.sleep_long.set(result_ttl=None).enqueue(key, 60)
    worker = start_worker(*LOAD, "-c", "1", *FAST_POLL)
    wait_for(lambda: _runs(r, key) == 1, 20, "the job to start")
    assert api.Job(jid).status == "running"
    cancelled_at = time.monotonic()
    assert api.Job(jid).cancel() is True
    if which == "sleeping-untracked":
        # Nothing is kept for it: its worker's slot (-c 1) is free when the next job runs.
        _marker_runs(r, tkey)
        assert api.Job(jid).status == "cancelled"
        with pytest.raises(api.JobCancelled):
            api.Job(jid).result(timeout=1)
    else:
        _ends_cancelled(jid)
        assert r.hget(ns.keys.result(jid), "error") is not None
        _marker_runs(r, tkey)
    assert time.monotonic() - cancelled_at < STOP_BOUND + SLACK
    assert worker.proc.poll() is None, worker.output()  # stopped at a safe point, not given up on
    assert "cancelled" in worker.output()
    assert r.lrange(key, 0, -1) == ["run"]  # never got to its end, never ran again
    _nothing_left(r, ns)


def test_a_job_burning_cpu_where_it_cannot_be_stopped_safely_is_cancelled_within_the_bound(ns, r, tkey, start_worker):
    # As a timeout that finds no safe point: recorded cancelled at the bound, and the worker stops gracefully
    # (its job goes on running meanwhile); nothing is retried, buried or put back.
    key = tkey("runs")
    jid = result_jobs.stuck_in_library.enqueue(key, 3.0)
    worker = start_worker(*LOAD, "-c", "2", "-t", "1")
    wait_for(lambda: _runs(r, key) == 1, 20, "the job to start")
    cancelled_at = time.monotonic()
    assert api.Job(jid).cancel() is True
    _ends_cancelled(jid)
    assert time.monotonic() - cancelled_at < STOP_BOUND + SLACK
    assert worker.proc.wait(30) == 0
    out = worker.output()
    assert "found no point where it could be stopped safely" in out, out[-3000:]
    assert _runs(r, key) == 1
    _nothing_left(r, ns)


def test_cancel_reaches_each_child_of_a_multi_process_worker(ns, r, tkey, start_worker):
    keys = [tkey("one"), tkey("two")]
    jids = [result_jobs.sleep_long.enqueue(key, 60) for key in keys]
    worker = start_worker(*LOAD, "-p", "2", "-c", "1")
    wait_for(lambda: all(_runs(r, key) == 1 for key in keys), 30, "a job running in each child")
    assert len(_identities(r, ns)) == 2
    for jid in jids:
        assert api.Job(jid).cancel() is True
    for jid in jids:
        _ends_cancelled(jid)
    assert worker.stop() == 0
    assert all(r.lrange(key, 0, -1) == ["run"] for key in keys)
    _nothing_left(r, ns)


def test_cancel_returns_false_for_ended_and_unknown_jobs(ns, r, tkey, start_worker):
    key = tkey("runs")
    tracked = result_jobs.give.enqueue(key, "kept")
    untracked = result_jobs.give.set(result_ttl=None).enqueue(key, "not kept")
    dead = result_jobs.fail.enqueue(key, "planned")
    start_worker(*LOAD, "-c", "2")
    assert api.Job(tracked).result(timeout=20) == "kept"
    with pytest.raises(api.JobFailed):
        api.Job(dead).result(timeout=20)
    wait_for(lambda: _runs(r, key) == 3, 20, "3 runs")
    wait_for(lambda: api.Job(untracked).status == "unknown", 10, "the untracked job to end")
    for jid in (tracked, untracked, dead, "no-such-jid"):
        assert api.Job(jid).cancel() is False, jid
    # Cancelling an ended job changes nothing of it.
    assert api.Job(tracked).status == "done" and api.Job(tracked).result() == "kept"
    assert api.Job(dead).status == "dead" and api.DeadSet().find(dead) is not None
    assert api.Job("no-such-jid").status in ("unknown", "cancelled")


@pytest.mark.parametrize("recoverer", ["live-when-cancelled", "started-after"])
def test_a_cancelled_job_recovered_from_a_killed_worker_never_runs_again(ns, r, tkey, start_worker, recoverer):
    key = tkey("runs")
    first = start_worker(*LOAD, "-c", "1", *FAST_BEAT)
    first_id = _new_identity(r, ns, set())
    jid = result_jobs.sleep_long.enqueue(key, 60)
    wait_for(lambda: _runs(r, key) == 1, 20, "the job to start")
    first.signal(signal.SIGSTOP)  # it cannot hear of the cancel nor stop the job
    second = None
    if recoverer == "live-when-cancelled":
        second = start_worker(*LOAD, "-c", "2", *FAST_BEAT, *FAST_POLL)
        _new_identity(r, ns, {first_id})
        wait_for(lambda: _cancel_listeners(r, ns) == 2, 20, "the second worker listening for cancellations")
    assert api.Job(jid).status == "running"
    assert api.Job(jid).cancel() is True
    first.kill()  # SIGKILL: the job stays in its working list until recovered
    if second is None:
        # A worker that starts after the first one's heartbeat expired recovers the job as it starts.
        wait_for(lambda: not r.exists(ns.keys.process(first_id)), 20, "the killed worker's heartbeat to expire")
        second = start_worker(*LOAD, "-c", "2", *FAST_BEAT, *FAST_POLL)
    wait_for(lambda: r.llen(ns.keys.working(first_id)) == 0, 30, "the killed worker's job recovered")
    _ends_cancelled(jid)
    _marker_runs(r, tkey)
    assert r.lrange(key, 0, -1) == ["run"], second.output()  # never started again
    assert "not started" in second.output()
    _nothing_left(r, ns)


def _held_by_stopped_worker(r, ns, worker, identity: str, key: str, tracked: bool = True) -> str:
    """SIGSTOP the idle worker while its fetch blocks in BLMOVE, then push a job: Redis moves it into the
    stopped worker's working list, where it waits, fetched but not started. Returns the job's jid."""
    working, queue = ns.keys.working(identity), ns.keys.queue("default")
    for _attempt in range(5):
        worker.signal(signal.SIGSTOP)
        jid = result_jobs.sleep_long.set(result_ttl=result_jobs.TTL if tracked else None).enqueue(key, 60)
        try:
            wait_for(lambda: any(jid in raw for raw in r.lrange(working, 0, -1)), 3, "the payload held")  # noqa: B023
            return jid
        except AssertionError:
            # Its BLMOVE was not waiting (between two, or timed out): take the job back and try again.
            for raw in r.lrange(queue, 0, -1):
                if jid in raw:
                    r.lrem(queue, 1, raw)
            worker.signal(signal.SIGCONT)
            wait_for(lambda: r.exists(ns.keys.process(identity)), 5, "the worker beating again")
            time.sleep(0.5)  # not a synchronisation: a moment for it to block in BLMOVE again
    raise AssertionError("the worker never held the job while stopped")


def _cancel_a_held_job(r, ns, tkey, start_worker, tracked: bool):
    """A job fetched by a (stopped) worker and cancelled before it could start; the worker then resumes."""
    key = tkey("runs")
    worker = start_worker(*LOAD, "-c", "1")
    identity = _new_identity(r, ns, set())
    wait_for(lambda: _cancel_listeners(r, ns) == 1, 20, "the worker listening for cancellations")
    jid = _held_by_stopped_worker(r, ns, worker, identity, key, tracked)
    assert api.Job(jid).status == "running"  # in a live process's hands
    assert api.Job(jid).cancel() is True
    worker.signal(signal.SIGCONT)  # it now reads the payload and the cancellation, in either order
    _marker_runs(r, tkey)  # -c 1: the cancelled job's slot is free again
    _ends_cancelled(jid)
    return worker, key


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked", "untracked"])
def test_a_fetched_job_cancelled_before_it_started_ends_cancelled_and_never_runs_again(
    ns, r, tkey, start_worker, tracked
):
    worker, key = _cancel_a_held_job(r, ns, tkey, start_worker, tracked)
    assert _runs(r, key) <= 1 and "end" not in r.lrange(key, 0, -1), worker.output()
    assert worker.proc.poll() is None
    _nothing_left(r, ns)


def test_a_tracked_job_fetched_and_cancelled_before_it_started_never_starts(ns, r, tkey, start_worker):
    # A tracked job reads NS:cancelled in the round trip that marks its start, so whichever of the payload and
    # the cancel message reaches the worker first, it never starts. (An untracked one may start in that instant
    # and is then stopped at once: the test above.)
    worker, key = _cancel_a_held_job(r, ns, tkey, start_worker, tracked=True)
    assert _runs(r, key) == 0, worker.output()
    assert "not started" in worker.output()


@pytest.mark.parametrize("where", ["queued", "running"])
def test_cancelling_a_unique_job_releases_its_lock(ns, r, tkey, start_worker, where):
    key = tkey("runs")
    jid = result_jobs.unique_sleep.enqueue(key, 60)
    assert jid is not None
    assert result_jobs.unique_sleep.enqueue(key, 60) is None  # held
    if where == "running":
        start_worker(*LOAD, "-c", "1")
        wait_for(lambda: _runs(r, key) == 1, 20, "the job to start")
    assert api.Job(jid).cancel() is True
    _ends_cancelled(jid)
    again = result_jobs.unique_sleep.enqueue(key, 60)
    assert again is not None and again != jid
    assert api.Job(again).status in ("queued", "running")


def test_cancelling_a_running_job_with_concurrency_1_frees_its_slot(ns, r, tkey, start_worker):
    first_key, second_key = tkey("first"), tkey("second")
    first = result_jobs.single.enqueue(first_key, 60)
    start_worker(*LOAD, "-c", "2", *FAST_POLL)
    wait_for(lambda: _runs(r, first_key) == 1, 20, "the first to start")
    second = result_jobs.single.enqueue(second_key, 0.1)
    # The slot is taken: the second one is put back in the scheduled set (over the limit), not run.
    wait_for(lambda: api.Job(second).status == "scheduled", 20, "the second one rescheduled")
    limit = api.Limits().get(result_jobs.single.name)
    assert limit is not None and limit.in_use == 1
    assert api.Job(first).cancel() is True
    _ends_cancelled(first)
    assert api.Job(second).result(timeout=30) is None  # it got the slot at its next try
    assert r.lrange(second_key, 0, -1) == ["run", "end"]
    assert r.lrange(first_key, 0, -1) == ["run"]
    assert api.Limits().get(result_jobs.single.name).in_use == 0
    _nothing_left(r, ns)


def test_cancelling_a_queued_job_of_a_batch_counts_it_as_failed(ns, r, tkey):
    key = tkey("runs")
    with Batch(description="cancel me", on_complete=result_jobs.give, callback_args=("cb",)) as batch:
        keep = result_jobs.give.enqueue(key, 1)
        drop = result_jobs.give.enqueue(key, 2)
    assert api.Job(drop).cancel() is True
    status = api.BatchStatus(batch.bid)
    assert (status.total, status.pending, status.failures, status.complete) == (2, 2, 1, False)
    assert status.failed_jids == [drop]
    assert api.Job(keep).cancel() is True
    status = api.BatchStatus(batch.bid)
    assert (status.failures, status.complete, status.success) == (2, True, False)
    # on_complete was enqueued, once, as give(bid, "cb").
    queued = [e for e in api.Queue("default") if e.name == result_jobs.give.name]
    assert [e.args for e in queued] == [[batch.bid, "cb"]]


def test_a_cancel_that_arrives_while_the_job_ends_leaves_it_ended_once(ns, r, tkey, start_worker):
    # The job has returned; a middleware's after-hook is still running when the cancel arrives.
    key = tkey("runs")
    jid = result_jobs.ends_in_slow_hook.enqueue(key, 1.0)
    worker = start_worker(*LOAD, "-c", "1")
    wait_for(lambda: r.lrange(key, 0, -1) == ["run", "after-hook"], 20, "the job in its after-hook")
    api.Job(jid).cancel()
    # It ends one way or the other (done: it had returned; or cancelled), and its payload is settled.
    try:
        assert api.Job(jid).result(timeout=10) == "returned"
    except api.JobCancelled:
        pass
    identity = _new_identity(r, ns, set())
    wait_for(lambda: r.llen(ns.keys.working(identity)) == 0, 10, "the payload settled")
    assert worker.stop() == 0
    assert "unexpected error" not in worker.output(), worker.output()
    _nothing_left(r, ns)  # not put back in its queue at the shutdown: it would run again
    assert r.lrange(key, 0, -1) == ["run", "after-hook"]


@pytest.mark.parametrize("where", ["queued", "scheduled"])
def test_in_sidekiq_wire_mode_cancelling_a_unique_job_of_a_batch_releases_its_lock_and_counts_it(ns, r, tkey, where):
    """With `wire="sidekiq"` the payloads are Sidekiq's (our fields nested under `jiggler`): the API reads them
    through the wire, so the lock and the batch of the job it cancels are found as in jiggler's format."""
    config.configure(wire="sidekiq")  # Sidekiq's keys, under NS: as redis-namespace puts them
    key = tkey("runs")
    with Batch(description="sidekiq wire") as batch:
        if where == "queued":
            jid = result_jobs.unique_sleep.enqueue(key, 60)
        else:
            jid = result_jobs.unique_sleep.enqueue_in(3600, key, 60)
    assert jid is not None and result_jobs.unique_sleep.enqueue(key, 60) is None  # held
    keys = config.current().keys
    raw = (r.lrange(keys.queue("default"), 0, -1) or r.zrange(keys.schedule, 0, -1))[0]
    assert '"class":"tests.result_jobs.unique_sleep"' in raw and '"unique_key"' in raw  # Sidekiq's shape
    assert api.Job(jid).status == where
    assert api.Job(jid).cancel() is True
    _ends_cancelled(jid)
    status = api.BatchStatus(batch.bid)
    assert (status.total, status.failures, status.complete, status.failed_jids) == (1, 1, True, [jid])
    again = result_jobs.unique_sleep.enqueue(key, 60)
    assert again is not None and again != jid


@pytest.mark.parametrize("sidekiq", ["6", "7"])
def test_in_sidekiq_wire_mode_a_job_a_ruby_process_runs_is_refused_with_a_clear_error(ns, r, sidekiq):
    """A Ruby Sidekiq process sharing the queues never reads jiggler's cancellations: cancelling a job it runs
    raises CancelRefused and records nothing, where it used to return False as for an unknown jid. The stale work
    entry of a jiggler worker of the namespace is not a refusal (its job has ended)."""
    config.configure(wire="sidekiq")
    keys = config.current().keys
    jid, ours = "a" * 24, "b" * 24
    job = {"class": "HardJob", "args": [1], "queue": "rb", "jid": jid, "retry": True, "enqueued_at": time.time()}
    ruby, python = "rubyhost:77:abc", "pyhost:78:def"
    for identity, info, running in (
        (ruby, {"hostname": "rubyhost"}, job),
        (python, {"namespace": ns.namespace}, dict(job, jid=ours)),
    ):
        r.sadd(keys.processes, identity)
        r.hset(keys.process(identity), mapping={"info": json.dumps(dict(info, identity=identity)), "busy": "1"})
        # Sidekiq 6 writes <identity>:workers with the job as an object, Sidekiq 7 <identity>:work with a string.
        work_key = keys.work_keys(identity)[1 if sidekiq == "6" else 0]
        payload = running if sidekiq == "6" else json.dumps(running)
        r.hset(work_key, "tid", json.dumps({"queue": "rb", "payload": payload, "run_at": int(time.time())}))
    if sidekiq == "7":  # the API reads <identity>:work through the wire too: the job in the internal form
        running = {p.identity: p.jobs for p in api.ProcessSet()}[ruby]
        assert [(w["payload"]["name"], w["payload"]["jid"]) for w in running] == [("HardJob", jid)]
    with pytest.raises(api.CancelRefused, match=f"job {jid} is running in {ruby}.*Ruby Sidekiq.*cannot be cancelled"):
        api.Job(jid).cancel()
    assert r.zscore(keys.cancelled, jid) is None and api.Job(jid).status == "unknown"
    assert api.Job(ours).cancel() is False
    assert api.Job("c" * 24).cancel() is False
    out = subprocess.run(
        gjiggler_command(ns, "cancel", jid, "--wire", "sidekiq"), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "refused" in out.stderr and "Ruby Sidekiq" in out.stderr, out
