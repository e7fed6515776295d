"""Iterable jobs (@job(iterable=True)) and progress with real workers: a graceful stop, recycling and a SIGKILL
resume from the stored cursor; cancel stops a CPU-bound iteration at its next checkpoint; a retry resumes; progress,
cursor and iterations are visible through api; bad input gives clear errors and loses nothing."""

import json
import signal
import warnings

import pytest

from jiggler_gevent import api, config, job, progress, testing
from tests import iter_jobs
from tests.conftest import held_jobs, wait_for

FAST = ("--heartbeat-interval", "0.2")  # progress flushed every 0.2 s; a killed process presumed dead after 2.4 s


def ran(r, key: str) -> list[int]:
    """The steps `iter_jobs.steps` recorded, in order."""
    return [int(item.split(":")[0]) for item in r.lrange(key, 0, -1)]


def pids(r, key: str) -> set[str]:
    return {item.split(":")[1] for item in r.lrange(key, 0, -1)}


def stored(r, ns, jid: str) -> dict[str, str]:
    return r.hgetall(ns.keys.job_state(jid))


def test_sigterm_puts_an_iterable_job_back_and_the_next_run_repeats_no_step(ns, r, tkey, start_worker):
    key = tkey("steps")
    first = start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.steps.enqueue(key, 40, 0.05)
    wait_for(lambda: len(ran(r, key)) >= 3, 30, "three steps")
    first.signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    assert "paused tests.iter_jobs.steps" in first.output()
    done = ran(r, key)
    assert done == list(range(len(done))) and len(done) < 40
    assert r.llen(ns.keys.queue("default")) == 1 and held_jobs(r, ns) == 0  # back in its queue, same jid
    assert json.loads(stored(r, ns, jid)["cursor"]) == done[-1]
    start_worker("-r", "tests.iter_jobs", *FAST)
    assert api.Job(jid).result(timeout=60) == 40
    assert ran(r, key) == list(range(40))  # every step once, in order
    assert len(pids(r, key)) == 2
    info = api.Job(jid).info()
    assert info["status"] == "done" and info["cursor"] == 39 and info["iterations"] == 40


def test_after_sigkill_only_the_steps_since_the_last_stored_checkpoint_run_again(ns, r, tkey, start_worker):
    key = tkey("steps")
    first = start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.steps.enqueue(key, 150, 0.05)
    # The cursor is stored every CHECKPOINT_EVERY seconds: wait for the first store, and a few steps more.
    wait_for(lambda: "cursor" in stored(r, ns, jid), 30, "a stored checkpoint")
    wait_for(lambda: len(ran(r, key)) > int(stored(r, ns, jid)["cursor"]) + 3, 10, "steps after the checkpoint")
    first.kill()
    at_kill = json.loads(stored(r, ns, jid)["cursor"])
    before = ran(r, key)
    assert before[-1] >= at_kill
    start_worker("-r", "tests.iter_jobs", *FAST)
    assert api.Job(jid).result(timeout=90) == 150
    after = ran(r, key)[len(before) :]
    assert after == list(range(at_kill + 1, 150))  # resumed right after the stored checkpoint
    repeated = sorted(set(before) & set(after))
    assert repeated == list(range(at_kill + 1, before[-1] + 1))  # only the steps since it ran twice


def test_recycling_with_max_jobs_resumes_the_job_in_each_fresh_process(ns, r, tkey, start_worker):
    key = tkey("steps")
    w = start_worker("-r", "tests.iter_jobs", "--max-jobs", "1", *FAST)
    jid = iter_jobs.steps.enqueue(key, 4, 0.2)
    assert api.Job(jid).result(timeout=90) == 4
    assert ran(r, key) == [0, 1, 2, 3]
    assert len(pids(r, key)) >= 2  # the process that took it was replaced before the job ended
    assert w.stop() == 0
    assert "max jobs reached" in w.output()


def test_cancel_stops_a_cpu_bound_iteration_at_its_next_checkpoint(ns, r, tkey, start_worker):
    key = tkey("burn")
    w = start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.burn_steps.enqueue(key, 200, 0.2)  # 40 s of CPU if nothing stops it
    wait_for(lambda: r.llen(key) == 1, 30, "the job to start")
    assert api.Job(jid).cancel() is True
    wait_for(lambda: api.Job(jid).status == "cancelled", 10, "the job to end cancelled")
    # stopped at a checkpoint: the cursor is stored as it ends, long before its 200 steps
    state = wait_for(lambda: stored(r, ns, jid), 10, "the cursor stored as the job stopped")
    wait_for(lambda: "cancelled tests.iter_jobs.burn_steps" in w.output(), 10, "the job's line")
    out = w.output()
    assert "found no point where it could be stopped safely" not in out  # stopped at a checkpoint, not given up
    assert w.proc.poll() is None  # the worker goes on
    assert r.lrange(key, 0, -1) == ["start 0"]
    assert int(state["iterations"]) < 200
    # The worker still runs jobs.
    other = tkey("after")
    assert api.Job(iter_jobs.steps.enqueue(other, 2)).result(timeout=30) == 2


def test_a_timeout_stops_a_cpu_bound_iteration_at_a_checkpoint_and_the_retry_resumes(ns, r, tkey, start_worker):
    key = tkey("burn")
    w = start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.burn_steps.set(timeout=1, retries=1).enqueue(key, 8, 0.2)  # 1.6 s of CPU against a 1 s timeout
    wait_for(lambda: len(api.RetrySet()) == 1, 30, "the timeout")
    entry = api.RetrySet().find(jid)
    assert entry is not None and entry.error_class == "JobTimeout"
    cursor = json.loads(stored(r, ns, jid)["cursor"])
    assert 0 <= cursor < 7  # stored as the timeout stopped it, before its end
    assert entry.retry()
    assert api.Job(jid).result(timeout=30) == 8
    assert r.lrange(key, 0, -1) == ["start 0", f"start {cursor + 1}"]  # the retry resumed after the checkpoint
    assert "found no point where it could be stopped safely" not in w.output()
    assert w.proc.poll() is None


@pytest.mark.parametrize("given", [(), (None,)], ids=["no cursor pushed", "cursor pushed by position"])
def test_a_retry_resumes_from_the_cursor(ns, r, tkey, start_worker, given):
    key = tkey("steps")
    start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.fails_once_at.enqueue(key, 10, 6, *given)
    wait_for(lambda: len(api.RetrySet()) == 1, 30, "the job to fail once")
    assert ran(r, key) == [0, 1, 2, 3, 4, 5]
    assert json.loads(stored(r, ns, jid)["cursor"]) == 5  # stored as it failed
    entry = api.RetrySet().find(jid)
    assert entry is not None and entry.retry()
    wait_for(lambda: len(ran(r, key)) == 10, 30, "the retry to finish")
    assert ran(r, key) == list(range(10))


def test_a_cursor_given_to_enqueue_is_where_the_first_run_starts(ns, r, tkey, start_worker):
    key = tkey("steps")
    start_worker("-r", "tests.iter_jobs", *FAST)
    assert api.Job(iter_jobs.steps.enqueue(key, 6, cursor=2)).result(timeout=30) == 6
    assert ran(r, key) == [3, 4, 5]


def test_progress_cursor_and_iterations_through_api_while_it_runs(ns, r, tkey, start_worker):
    key = tkey("steps")
    start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.steps.enqueue(key, 200, 0.05)
    info = wait_for(lambda: (i := api.Job(jid).info()).get("progress") and "cursor" in i and i, 30, "progress")
    assert info["status"] == "running"
    assert 0 < info["progress"] < 1 and info["message"].startswith("step ")
    assert isinstance(info["cursor"], int) and info["iterations"] == info["cursor"] + 1
    # and on the process's work hash, which the Busy page reads
    work = wait_for(lambda: [w for p in api.ProcessSet() for w in p.jobs if "progress" in w], 10, "the work entry")
    assert work[0]["message"].startswith("step ") and work[0]["iterations"] >= 1
    assert api.Job(jid).cancel() is True


def test_a_non_json_cursor_fails_the_job_with_a_clear_error_and_keeps_its_payload(ns, r, tkey, start_worker):
    key = tkey("bad")
    start_worker("-r", "tests.iter_jobs", *FAST)
    jid = iter_jobs.bad_cursor.enqueue(key)
    wait_for(lambda: len(api.DeadSet()) == 1, 30, "the job to die")
    entry = api.DeadSet().find(jid)
    assert entry is not None and entry.args == [key]
    assert entry.error_class == "TypeError" and "cursor that is not JSON" in entry.error_message


def test_an_iterable_job_needs_a_generator_with_a_cursor_keyword():
    with pytest.raises(TypeError, match="needs a generator function"):

        @job(iterable=True)
        def not_a_generator(cursor=None):
            return 1

    with pytest.raises(TypeError, match="needs a `cursor` keyword parameter"):

        @job(iterable=True)
        def no_cursor(n):
            yield n

    with pytest.raises(TypeError, match="needs a default: cursor=None"):

        @job(iterable=True)
        def no_default(n, cursor):
            yield n


def test_calling_an_iterable_job_runs_it_inline_to_its_end(ns, r, tkey):
    key = tkey("inline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # progress() outside a worker's job
        assert iter_jobs.steps(key, 3) == 3
        assert iter_jobs.steps(key, 5, cursor=2) == 5
    assert ran(r, key) == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="cursor that is not JSON"):
        iter_jobs.bad_cursor(key)


def test_testing_inline_runs_an_iterable_job_to_its_end(ns, r, tkey):
    key = tkey("inline")
    with warnings.catch_warnings(), testing.inline():
        warnings.simplefilter("ignore", RuntimeWarning)  # progress() outside a worker's job
        iter_jobs.steps.enqueue(key, 4)
    assert ran(r, key) == [0, 1, 2, 3]


def test_progress_checks_its_arguments_and_is_a_no_op_outside_a_job():
    for bad in (-0.1, 1.5, float("nan"), "half", True, None):
        with pytest.raises(ValueError, match="from 0.0 to 1.0"):
            progress(bad)
    with pytest.raises(TypeError, match="message must be a string"):
        progress(0.5, 3)
    with pytest.warns(RuntimeWarning, match="outside a running job"):
        progress(0.5, "half")


def test_info_of_a_job_that_reported_nothing_has_no_progress(ns, r):
    jid = iter_jobs.fails_once_at.enqueue("unused", 1, 0)  # not tracked: no result fields either
    assert api.Job(jid).info() == {"jid": jid, "status": "queued"}
    config.redis_client().delete(ns.keys.queue("default"))
