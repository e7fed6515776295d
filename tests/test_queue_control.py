"""Queue control: pause and resume (api.Queue, `gjiggler pause/resume`, the dashboard's buttons), checked by the fetch
script for every worker at once, on real Redis and real worker processes."""

import json
import subprocess
import sys

import pytest

from jiggler_gevent import api, config
from jiggler_gevent.keys import SidekiqKeys
from jiggler_gevent.server import fetch as fetch_mod
from jiggler_gevent.server.fetch import ReliableFetch
from jiggler_gevent.web import create_app
from tests import jobs
from tests.conftest import ROOT, held_jobs, wait_for
from tests.test_fetch import push, push_once_blocked, queued
from tests.test_web import Browser


@pytest.fixture
def client(ns):
    return config.redis_client(ns.url)


@pytest.fixture
def make_fetch(client, ns):
    made: list[ReliableFetch] = []

    def make(queues, keys=None):
        made.append(ReliableFetch(client, keys or ns.keys, "test-fetch", queues, True))
        return made[-1]

    yield make
    for fetch in made:
        fetch.conn.close()


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
    fetch = make_fetch([("a", 1)], keys)
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
