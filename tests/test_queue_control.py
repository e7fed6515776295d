"""Queue control: pause and resume (api.Queue, `gjiggler pause/resume`, the dashboard's buttons), checked by the fetch
script for every worker at once, on real Redis and real worker processes."""

import datetime
import json
import subprocess
import sys
import time

import pytest

from jiggler_gevent import api, job
from jiggler_gevent.errors import JobFailed
from jiggler_gevent.job import JobCall
from jiggler_gevent.keys import SidekiqKeys
from jiggler_gevent.server import fetch as fetch_mod
from jiggler_gevent.web import create_app
from tests import jobs
from tests.conftest import ROOT, held_jobs, wait_for
from tests.test_fetch import push, push_once_blocked, queued
from tests.test_web import Browser


def test_a_paused_queue_gives_nothing_and_the_others_carry_on(make_fetch, client, ns):
    fetch = make_fetch([("a", 1), ("b", 1)])
    push(client, ns, "a", "a1", "a2")
    push(client, ns, "b", "b1")
    api.Queue("a").pause()
    assert api.Queue("a").paused and not api.Queue("b").paused
    assert fetch.take(5) == ["b1"] and fetch.paused
    assert queued(client, ns, "a") == ["a1", "a2"]
    api.Queue("a").resume()
    assert not api.Queue("a").paused and client.zcard(ns.keys.wake) == 1  # resume wakes an idle worker
    assert fetch.take(5) == ["a1", "a2"] and not fetch.paused


def test_an_idle_worker_on_a_paused_queue_does_not_blmove_from_it(make_fetch, client, ns, monkeypatch):
    monkeypatch.setattr(fetch_mod, "WAKE_BLOCK", 0.1)
    fetch = make_fetch([("a", 1)])
    push(client, ns, "a", "a1")
    api.Queue("a").pause()
    assert fetch.take(1) == [] and fetch.paused and fetch.drained
    assert fetch.wait(1) == []  # it blocked on NS:wake, not in a BLMOVE that would take a1
    assert queued(client, ns, "a") == ["a1"] and fetch.held() == []


def test_a_queue_paused_while_blmove_blocks_gets_its_payload_back(make_fetch, client, ns, monkeypatch):
    """The fetch behind BLMOVE sees the pause: the payload BLMOVE moved goes back to its queue, never handed over."""
    monkeypatch.setattr(fetch_mod, "SINGLE_QUEUE_BLOCK", 10)
    fetch = make_fetch([("a", 1)])

    late, later = (json.dumps({"queue": "a", "n": n}) for n in (1, 2))  # requeue reads the payload's queue

    def pause_then_push(other):
        api.Queue("a").pause()
        other.lpush(ns.keys.queue("a"), late, later)

    thread, errors = push_once_blocked(ns, fetch, "blmove", pause_then_push)
    handed: list[str] = []
    assert fetch.wait(5, handed.append) == []
    thread.join(10)
    assert errors == [] and handed == [] and fetch.paused
    assert queued(client, ns, "a") == [late, later] and fetch.held() == []


def test_pause_on_the_sidekiq_layout(make_fetch, client, ns):
    keys = SidekiqKeys(namespace=ns.namespace, prefix=f"{ns.namespace}:sk:")
    fetch = make_fetch([("a", 1)], keys=keys)
    client.lpush(keys.queue("a"), "s1")
    client.sadd(keys.paused, keys.queue("a"))
    assert fetch.take(1) == [] and fetch.paused
    client.srem(keys.paused, keys.queue("a"))
    assert fetch.take(1) == ["s1"]
    client.delete(keys.queue("a"))


def _gj(ns, *args):
    return subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", *args, "--redis-url", ns.url, "--namespace", ns.namespace],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_pause_and_resume(ns):
    out = _gj(ns, "pause", "a", "b")
    assert out.returncode == 0 and out.stdout.splitlines() == ["a: paused", "b: paused"]
    assert api.Queue("a").paused and api.Queue("b").paused and not api.Queue("c").paused
    out = _gj(ns, "resume", "b")
    assert out.returncode == 0 and out.stdout.strip() == "b: resumed"
    assert api.Queue("a").paused and not api.Queue("b").paused
    assert _gj(ns, "pause").returncode == 2  # a queue is required


def test_cli_pause_on_the_sidekiq_wire_names_sidekiqs_queue_key(ns, r):
    assert _gj(ns, "pause", "--wire", "sidekiq", "rb").returncode == 0
    sidekiq_keys = SidekiqKeys(namespace=ns.namespace, prefix=f"{ns.namespace}:")  # a namespace P: keys under P:
    assert r.smembers(ns.keys.paused) == {sidekiq_keys.queue("rb")}
    assert _gj(ns, "resume", "--wire", "sidekiq", "rb").returncode == 0 and r.scard(ns.keys.paused) == 0


def test_dashboard_pause_and_resume_buttons(ns):
    web = Browser(create_app())
    jobs.record.set(queue="q1").enqueue("web:pause", 1)
    page = web.get("/queues/q1").text
    assert 'value="pause">Pause</button>' in page and "data-paused" not in page
    refused = web.request("POST", "/queues/q1", {"bulk": "pause", "csrf": "forged"})
    assert refused.code == 403 and not api.Queue("q1").paused
    resp = web.post("/queues/q1", {"bulk": "pause"})
    assert resp.header("Location") == "/queues/q1?flash=paused" and api.Queue("q1").paused
    page = web.get("/queues/q1").text
    assert 'value="resume">Resume</button>' in page and "data-paused" in page
    assert "data-paused" in web.get("/queues").text
    resp = web.post("/queues/q1", {"bulk": "resume"})
    assert resp.header("Location") == "/queues/q1?flash=resumed" and not api.Queue("q1").paused
    assert len(api.Queue("q1")) == 1  # pausing and resuming touch no job


def test_a_paused_queue_starts_nothing_in_two_workers_and_resume_starts_its_jobs(ns, r, tkey, start_worker):
    """Worker A (-p 2) fetches from two queues; worker B, idle on the paused queue alone, blocks in BLMOVE when it
    is paused: no job of the paused queue runs in either until it is resumed, and the other queue carries on."""
    slow, fast = tkey("slow"), tkey("fast")
    start_worker("-p", "2", "-q", "slow", "-q", "fast", "-c", "5")
    start_worker("-q", "slow", "-c", "5")
    blocked = lambda: any(c["cmd"] == "blmove" for c in r.client_list())  # noqa: E731
    wait_for(blocked, 30, "worker B idle in BLMOVE")
    api.Queue("slow").pause()
    jobs.record.set(queue="slow").enqueue_bulk([(slow, str(i)) for i in range(20)])
    jobs.record.set(queue="fast").enqueue_bulk([(fast, str(i)) for i in range(5)])
    wait_for(lambda: r.llen(fast) == 5, 30, "the other queue's jobs")
    wait_for(lambda: not blocked() and held_jobs(r, ns) == 0 and len(api.Queue("slow")) == 20, 30, "all given back")
    assert r.llen(slow) == 0
    api.Queue("slow").resume()
    wait_for(lambda: r.llen(slow) == 20, 30, "the resumed queue's jobs")
    assert sorted(r.lrange(slow, 0, -1), key=int) == [str(i) for i in range(20)]


# Expiry


def test_bad_expiry_is_refused_at_enqueue_and_pushes_nothing(ns, r):
    for bad in (-1, 0, float("nan"), float("inf"), "10", True):
        with pytest.raises(ValueError, match="expires_in must be a positive number"):
            jobs.record.set(expires_in=bad)
    with pytest.raises(ValueError, match="expires_in must be a positive number"):
        job(expires_in=-5)(lambda: None)
    with pytest.raises(ValueError, match="not after the time the job becomes due"):
        jobs.record.set(expires_at=time.time() - 1).enqueue("x", "y")
    with pytest.raises(ValueError, match="not after the time the job becomes due"):
        jobs.record.set(expires_at=time.time() + 60).enqueue_in(120, "x", "y")
    with pytest.raises(ValueError, match="not both"):
        JobCall(jobs.record, "default", 0, None, True, expires_in=5, expires_at=time.time() + 60)
    assert api.Stats().enqueued == 0 and len(api.ScheduledSet()) == 0


def test_the_deadline_counts_from_when_the_job_becomes_due(ns):
    before = time.time()
    jobs.record.set(expires_in=60).enqueue("k", "now")
    jobs.record.set(expires_in=60).enqueue_in(100, "k", "later")
    at = datetime.datetime.fromtimestamp(before + 500, datetime.UTC)
    jobs.record.set(queue="q", expires_in=10).set(expires_at=at).enqueue("k", "fixed")  # replaces expires_in
    (now,) = [e.item for e in api.Queue("default")]
    (later,) = [e.item for e in api.ScheduledSet()]
    (fixed,) = [e.item for e in api.Queue("q")]
    assert before + 60 <= now["expires_at"] <= time.time() + 60
    assert later["expires_at"] == pytest.approx(later["at"] + 60)
    assert fixed["expires_at"] == pytest.approx(before + 500)


def _past(deadline: float) -> None:
    wait_for(lambda: time.time() > deadline, 10, "the deadline")  # waiting for the clock itself


def test_jobs_past_their_deadline_never_run_and_are_counted_expired(ns, r, tkey, start_worker):
    """Queued past their deadline (the queue paused meanwhile), then taken by two worker processes: none runs, each
    is counted as expired (stats, per-job metrics), a tracked one reads "expired"; none is dead or retried."""
    key = tkey("expiring")
    api.Queue("default").pause()
    call = jobs.record.set(expires_in=0.5)
    jids = [call.enqueue(key, str(i)) for i in range(10)]
    tracked = call.set(result_ttl=60).enqueue(key, "tracked")
    fresh = jobs.record.set(expires_in=3600).enqueue(key, "fresh")
    _past(api.Queue("default").page(0, 1)[0].item["expires_at"] + 0.5)
    start_worker("-p", "2", "-c", "5", "--heartbeat-interval", "0.2")
    api.Queue("default").resume()
    wait_for(lambda: api.Stats().expired == 11, 30, "11 expired jobs counted")
    wait_for(lambda: r.llen(key) == 1, 30, "the fresh job")
    assert r.lrange(key, 0, -1) == ["fresh"] and all(jids) and fresh
    # written with its outcome by the Acker, which the heartbeat's flush of the count may come before
    wait_for(lambda: api.Job(tracked).status == "expired", 10, "the tracked job's status")
    with pytest.raises(JobFailed, match="JobExpired"):
        api.Job(tracked).result(timeout=5)
    assert len(api.DeadSet()) == 0 and len(api.RetrySet()) == 0 and api.Stats().enqueued == 0
    summary = lambda: api.Metrics(minutes=5).job(jobs.record.name)  # noqa: E731
    wait_for(lambda: (summary().expired, summary().runs) == (11, 1), 30, "the per-job metrics")
    out = _gj(ns, "stats", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["expired"] == 11


def test_a_retry_past_the_deadline_never_runs(ns, r, tkey, start_worker):
    key = tkey("retrying")
    start_worker("-c", "2")
    wait_for(lambda: api.Stats().processes == 1, 30, "the worker up")  # so the first run comes well in time
    jid = jobs.fail_times.set(expires_in=5.0, result_ttl=60).enqueue(key, 5)
    wait_for(lambda: len(api.RetrySet()) == 1, 30, "the first failure in the retry set")
    assert api.Job(jid).status == "retrying"
    _past(api.RetrySet().page(0, 1)[0].item["expires_at"])
    assert api.RetrySet().retry_all() == 1  # due now: back in its queue, past its deadline
    wait_for(lambda: api.Job(jid).status == "expired", 30, "the retry expired")
    assert r.lrange(key, 0, -1) == ["run"]  # the first run only
    assert len(api.DeadSet()) == 0 and len(api.RetrySet()) == 0


def test_prometheus_counts_expired_jobs_by_job_and_queue():
    from jiggler_gevent.server.prometheus import JobCollector, JobMetrics
    from jiggler_gevent.server.tally import Tally

    metrics = JobMetrics(("default",), 10, known=lambda name: name == "known")
    tally = Tally((metrics,), known=lambda name: name == "known")
    tally.expired("known", "default")
    tally.expired("known", "default")
    tally.expired("made-up", "elsewhere")
    families = {f.name: f for f in JobCollector(metrics.state).collect()}
    samples = {
        tuple(s.labels.values()): s.value for s in families["jiggler_jobs_expired"].samples if "_total" in s.name
    }
    assert samples == {("known", "default"): 2, ("unknown", "unknown"): 1}
    processed = [s.value for s in families["jiggler_jobs_processed"].samples if "_total" in s.name]
    assert sum(processed) == 0  # an expired job did not run


# Debounce

ENQUEUER = """
import sys
from jiggler_gevent import config
from tests import jobs

config.configure(redis_url=sys.argv[1], namespace=sys.argv[2])
call = jobs.record.set(debounce=1.0)
print(" ".join(call.enqueue(sys.argv[3], f"{sys.argv[4]}-{i}") for i in range(30)), flush=True)
"""


def _due(jid: str) -> float:
    (entry,) = [e for e in api.ScheduledSet() if e.jid == jid]
    return float(entry.score)


def test_debounce_replaces_the_waiting_job_and_keeps_its_jid(ns, r):
    call = jobs.record.set(debounce=30)
    before = time.time()
    first = call.enqueue("k", "a")
    assert call.enqueue("k", "b") == first and call.enqueue("k", "c") == first
    other = call.set(debounce_key="tenant-2").enqueue("k", "x")
    elsewhere = call.set(queue="low").enqueue("k", "y")  # the default key is the wire name and the queue
    assert len({first, other, elsewhere}) == 3
    (entry,) = [e for e in api.ScheduledSet() if e.jid == first]
    assert entry.args == ["k", "c"] and len(api.ScheduledSet()) == 3
    assert before + 30 <= _due(first) <= time.time() + 30
    assert api.Stats().enqueued == 0


def test_bad_debounce_is_refused_and_pushes_nothing(ns):
    for bad in (-1, 0, float("inf"), "5", True):
        with pytest.raises(ValueError, match="debounce must be a positive number"):
            jobs.record.set(debounce=bad)
    with pytest.raises(ValueError, match="debounce_key must be a non-empty string given with debounce"):
        jobs.record.set(debounce_key="k")
    with pytest.raises(ValueError, match="debounce_key must be a non-empty string"):
        jobs.record.set(debounce=1, debounce_key=7)
    with pytest.raises(ValueError, match="debounced or unique"):
        jobs.record.set(debounce=1, unique_for=60)
    with pytest.raises(ValueError, match="enqueue_in of a debounced job|enqueue_at of a debounced job"):
        jobs.record.set(debounce=1).enqueue_in(5, "k", "v")
    with pytest.raises(ValueError, match="enqueue_bulk of a debounced job"):
        jobs.record.set(debounce=1).enqueue_bulk([("k", "v")])
    assert len(api.ScheduledSet()) == 0 and api.Stats().enqueued == 0


def test_a_debounced_job_already_due_in_its_queue_is_replaced_until_a_worker_takes_it(ns, r, tkey, start_worker):
    key = tkey("due")
    api.Queue("default").pause()
    start_worker("-c", "2", "--poll-interval", "0.2")
    # 2 s: the checks below read the job back in the scheduled set before the poller (0.2 s) can move it again
    call = jobs.record.set(debounce=2)
    jid = call.enqueue(key, "first")
    wait_for(lambda: len(api.Queue("default")) == 1 and len(api.ScheduledSet()) == 0, 30, "the job due in its queue")
    assert call.enqueue(key, "second") == jid  # still waiting: taken back out of its queue, due again later
    assert len(api.Queue("default")) == 0 and [e.args for e in api.ScheduledSet()] == [[key, "second"]]
    api.Queue("default").resume()
    wait_for(lambda: r.llen(key) == 1, 30, "the one run")
    assert r.lrange(key, 0, -1) == ["second"]


def test_concurrent_debounced_enqueues_from_three_processes_run_once_with_the_last_arguments(ns, r, tkey, start_worker):
    key = tkey("debounced")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, ns.url, ns.namespace, key, f"p{n}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    jids = set()
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        jids.update(out.split())
    assert len(jids) == 1 and len(api.ScheduledSet()) == 1  # 90 enqueues, one job waiting
    (last,) = [e.args for e in api.ScheduledSet()]
    start_worker("-p", "2", "-c", "5", "--poll-interval", "0.2")
    wait_for(lambda: r.llen(key) == 1, 30, "the one run")
    wait_for(lambda: held_jobs(r, ns) == 0, 30, "nothing held")
    assert r.lrange(key, 0, -1) == [last[1]] and len(api.ScheduledSet()) == 0 and api.Stats().enqueued == 0
