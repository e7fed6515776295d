"""`async def` jobs (server/async_jobs.py): run on the worker's asyncio loop beside blocking jobs, `-c` counting
both; timeouts and cancellation reach the coroutine as CancelledError; retries and results apply; real async I/O
works; a coroutine that computes does not stop the heartbeat; a blocking job may call asyncio.run() meanwhile.

Workers are `gjiggler worker` subprocesses on a fresh namespace (`-r tests.coroutine_jobs`). Overlap is proven
with a barrier in Redis (each job counts itself in, then waits for all the others), never with timings; timing
bounds are generous hang detectors.
"""

import json
import time
import uuid

import pytest

from jiggler_gevent import api, chain, config, job
from jiggler_gevent.errors import JobCancelled
from tests import coroutine_jobs
from tests.conftest import heartbeat_times, wait_for

LOAD = ("-r", "tests.coroutine_jobs")


def _key(ns: config.Config, name: str) -> str:
    return f"{ns.namespace}:t:{name}:{uuid.uuid4().hex[:6]}"


def test_async_and_blocking_jobs_run_at_once_in_one_process(r, ns, start_worker):
    start_worker(*LOAD, "-c", "10")
    key = _key(ns, "overlap")
    for _ in range(5):
        coroutine_jobs.meet.enqueue(key, 10)
        coroutine_jobs.meet_blocking.enqueue(key, 10)
    wait_for(lambda: r.llen(key) == 10, 60, "the ten jobs to leave the barrier")
    assert sorted(r.lrange(key, 0, -1)) == ["async:met"] * 5 + ["blocking:met"] * 5


def _beat_info(r, ns) -> dict:
    [identity] = r.smembers(ns.keys.processes)
    return json.loads(r.hget(ns.keys.process(identity), "info"))


def test_an_async_job_holds_one_of_the_c_slots_while_it_runs(r, ns, start_worker):
    start_worker(*LOAD, "-c", "2", "--heartbeat-interval", "0.2")
    key = _key(ns, "slots")
    coroutine_jobs.wait_open.enqueue(key)
    coroutine_jobs.wait_open.enqueue(key)
    wait_for(lambda: r.get(key + ":count") == "2", 30, "two async jobs waiting")
    coroutine_jobs.wait_open.enqueue(key)
    enqueued = time.time()
    # A heartbeat written after the third push: both slots busy, the third job still queued.
    info = wait_for(lambda: (i := _beat_info(r, ns))["beat"] > enqueued + 0.05 and i, 30, "a later heartbeat")
    assert info["busy"] == 2 and r.llen(ns.keys.queue("default")) == 1 and r.get(key + ":count") == "2"
    r.set(key + ":open", "1")
    wait_for(lambda: r.llen(key) == 3, 30, "the three jobs to end")


def test_a_blocking_job_calls_asyncio_run_while_async_jobs_wait_on_the_loop(r, ns, start_worker):
    start_worker(*LOAD, "-c", "5")
    key = _key(ns, "nested")
    for _ in range(3):
        coroutine_jobs.meet.enqueue(key, 5)
    coroutine_jobs.meet_in_asyncio_run.enqueue(key, 5)
    coroutine_jobs.meet_blocking.enqueue(key, 5)
    wait_for(lambda: r.llen(key) == 5, 60, "the five jobs to leave the barrier")
    assert sorted(r.lrange(key, 0, -1)) == ["async:met"] * 3 + ["asyncio.run:met", "blocking:met"]


def test_a_timeout_reaches_the_coroutine_as_cancelled_error(r, ns, start_worker):
    start_worker(*LOAD, "-c", "2")
    key = _key(ns, "timeout")
    coroutine_jobs.overstay.enqueue(key)
    wait_for(lambda: len(api.DeadSet()) == 1, 30, "the job to time out")
    [entry] = list(api.DeadSet())
    assert entry.error_class == "JobTimeout", entry.error_message
    assert r.lrange(key, 0, -1) == ["start", "CancelledError"]


def test_cancel_reaches_a_running_coroutine_as_cancelled_error(r, ns, start_worker):
    start_worker(*LOAD, "-c", "2")
    key = _key(ns, "cancel")
    jid = coroutine_jobs.wait_for_cancel.enqueue(key)
    wait_for(lambda: r.lrange(key, 0, -1) == ["start"], 30, "the job to start")
    assert api.Job(jid).cancel() is True
    with pytest.raises(JobCancelled):
        api.Job(jid).result(timeout=30)
    wait_for(lambda: r.llen(key) == 2, 10, "the coroutine to record its end")
    assert r.lrange(key, 0, -1) == ["start", "CancelledError"]
    assert len(api.RetrySet()) == 0 and len(api.DeadSet()) == 0


def test_a_failing_async_job_is_retried(r, ns, start_worker):
    start_worker(*LOAD, "-c", "2", "--poll-interval", "0.2")
    key = _key(ns, "retry")
    coroutine_jobs.fail_once.enqueue(key)
    wait_for(lambda: len(api.RetrySet()) == 1, 30, "the first run to fail")
    [entry] = list(api.RetrySet())
    assert (entry.error_class, entry.error_message) == ("ValueError", "the first run fails")
    api.RetrySet().retry_all()
    wait_for(lambda: r.get(key) == "2", 30, "the retry to run")
    wait_for(lambda: not r.llen(ns.keys.queue("default")) and not held(r, ns), 30, "the retry to end")
    assert len(api.RetrySet()) == 0 and len(api.DeadSet()) == 0


def held(r, ns) -> int:
    return sum(r.llen(k) for k in r.scan_iter(ns.keys.working("*")))


def test_the_result_of_an_async_job_is_its_awaited_value(ns, start_worker):
    start_worker(*LOAD, "-c", "2")
    jid = coroutine_jobs.add.enqueue(2, 3)
    assert api.Job(jid).result(timeout=30) == 5


def test_an_async_job_does_its_own_socket_io_on_the_loop(ns, redis_url, start_worker):
    start_worker(*LOAD, "-c", "2")
    host, port = _host_port(redis_url)
    jid = coroutine_jobs.ping_over_a_socket.enqueue(host, port)
    assert api.Job(jid).result(timeout=30) == "+PONG"


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def test_a_coroutine_that_computes_does_not_stop_the_heartbeat(r, ns, start_worker):
    interval, threshold = 0.5, 0.1
    worker = start_worker(*LOAD, "-c", "4", "--heartbeat-interval", str(interval), "--preempt", str(threshold))
    wait_for(lambda: r.smembers(ns.keys.processes), 20, "the worker's first heartbeat")
    key = _key(ns, "burn")
    coroutine_jobs.burn.enqueue(key, 4.0)
    wait_for(lambda: r.llen(key + ":started"), 20, "the coroutine to start computing")
    beats = heartbeat_times(r, ns, 3.0)
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(gaps) >= 2, (beats, worker.output()[-2000:])
    assert max(gaps) < interval * 1.1 + threshold + 1.0, gaps  # the bound of test_preempt's blocking hogs
    wait_for(lambda: r.llen(key), 20, "the coroutine to finish")


def test_without_preemption_the_computing_coroutine_stops_the_heartbeat(r, ns, start_worker):
    start_worker(*LOAD, "-c", "4", "--heartbeat-interval", "0.5", "--preempt", "0")
    wait_for(lambda: r.smembers(ns.keys.processes), 20, "the worker's first heartbeat")
    key = _key(ns, "burn0")
    coroutine_jobs.burn.enqueue(key, 4.0)
    wait_for(lambda: r.llen(key + ":started"), 20, "the coroutine to start computing")
    beats = heartbeat_times(r, ns, 3.0)
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert not gaps or max(gaps) > 2.0, f"the test would not show that pre-emption helps: {gaps}"


def test_async_def_is_a_job_and_async_generators_are_refused():
    async def fetch_page(url):
        return url

    async def pages(url):
        yield url

    assert job(fetch_page).name.endswith("fetch_page")
    with pytest.raises(TypeError, match="pages is an async generator function"):
        job(pages)
    with pytest.raises(TypeError, match="fetch_page is an async def function: @job\\(iterable=True\\)"):
        job(iterable=True)(fetch_page)


def test_a_chain_of_async_steps_passes_each_awaited_value_on(ns, start_worker):
    start_worker(*LOAD, "-c", "4")
    workflow = chain(coroutine_jobs.add.s(1, 2), coroutine_jobs.add.s(10), coroutine_jobs.add.s(100)).enqueue()
    assert workflow.result(timeout=30) == 113


def test_a_shutdown_cancels_a_waiting_coroutine_and_puts_its_job_back(r, ns, start_worker):
    worker = start_worker(*LOAD, "-c", "2", "-t", "0.5")
    key = _key(ns, "shutdown")
    jid = coroutine_jobs.wait_for_cancel.enqueue(key)
    wait_for(lambda: r.lrange(key, 0, -1) == ["start"], 30, "the job to start")
    assert worker.stop() == 0
    assert r.lrange(key, 0, -1) == ["start", "CancelledError"]
    [raw] = r.lrange(ns.keys.queue("default"), 0, -1)
    assert json.loads(raw)["jid"] == jid
    assert len(api.RetrySet()) == 0 and len(api.DeadSet()) == 0


def test_a_computing_coroutine_past_its_timeout_ends_its_job_after_the_grace(r, ns, start_worker):
    worker = start_worker(*LOAD, "-c", "2")
    key = _key(ns, "burn-timeout")
    coroutine_jobs.burn.set(timeout=0.5).enqueue(key, 10.0)
    wait_for(lambda: len(api.DeadSet()) == 1, 30, "the job to time out")
    [entry] = list(api.DeadSet())
    assert entry.error_class == "JobTimeout", entry.error_message
    assert r.llen(key) == 0, "the job ended while its coroutine still computed"
    assert "has not ended after 3.0s (it does not await)" in worker.output()


def test_a_coroutine_that_holds_the_hub_is_reported_by_its_jobs_name(r, ns, start_worker):
    worker = start_worker(*LOAD, "-c", "2")
    key = _key(ns, "gil")
    jid = coroutine_jobs.hold_the_gil.enqueue(key, 1.0)
    wait_for(lambda: r.llen(key), 30, "the job to finish")
    lines = wait_for(lambda: [ln for ln in worker.output().splitlines() if "held the hub for" in ln], 10, "a report")
    # the loop's greenlet held the hub: the report names the job whose coroutine it ran, not the greenlet
    assert f"job tests.coroutine_jobs.hold_the_gil (jid {jid})" in lines[0], lines[0]


def test_an_async_job_reports_progress_through_its_jobs_context(r, ns, start_worker):
    start_worker(*LOAD, "-c", "2", "--heartbeat-interval", "0.2")
    key = _key(ns, "progress")
    jid = coroutine_jobs.halfway.enqueue(key)
    info = wait_for(lambda: (i := api.Job(jid).info()).get("progress") and i, 30, "the progress")
    assert (info["progress"], info["message"]) == (0.5, "half")
    r.set(key + ":open", "1")
    wait_for(lambda: r.llen(key), 30, "the job to end")


@pytest.mark.parametrize("how, dead", [("exit", 1), ("stop", 0)])
def test_a_coroutine_that_exits_or_stops_the_loop_leaves_it_running(ns, start_worker, how, dead):
    worker = start_worker(*LOAD, "-c", "2")
    coroutine_jobs.upset_the_loop.enqueue(how)
    assert api.Job(coroutine_jobs.add.enqueue(1, 1)).result(timeout=30) == 2  # after it, the loop runs async jobs
    wait_for(lambda: len(api.DeadSet()) == dead and not api.Queue("default").size, 30, "the first job's end")
    if dead:
        [entry] = list(api.DeadSet())
        assert entry.error_class == "SystemExit"
    assert worker.proc.poll() is None


def test_a_concurrency_limit_holds_for_async_jobs_across_two_processes(r, ns, start_worker):
    start_worker(*LOAD, "-c", "4")
    start_worker(*LOAD, "-c", "4")
    key = _key(ns, "limited")
    for _ in range(6):
        coroutine_jobs.one_at_a_time.enqueue(key)
    wait_for(lambda: r.llen(key) >= 6, 60, "the six limited jobs to end")
    assert r.lrange(key, 0, -1) == ["done"] * 6, "never two at once, with eight slots free"
