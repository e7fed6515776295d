"""@job and the enqueue verbs, against a real Redis (no worker)."""

import datetime as dt
import json
import math
import subprocess
import sys
import time

import pytest

from jiggler_gevent import job, payload
from jiggler_gevent.client import Client, EnqueueError
from jiggler_gevent.job import SHAPES_REMEMBERED
from tests import jobs
from tests.conftest import ROOT


def queued(r, ns, queue="default"):
    return [json.loads(raw) for raw in reversed(r.lrange(ns.keys.queue(queue), 0, -1))]


def test_enqueue_pushes_a_complete_payload(ns, r):
    jid = jobs.record.enqueue("k", "v")
    [p] = queued(r, ns)
    assert p["jid"] == jid and len(jid) == 24
    assert p["name"] == "tests.jobs.record"
    assert p["args"] == ["k", "v"] and p["kwargs"] == {}
    assert p["queue"] == "default" and p["retries"] == 25 and p["dead"] is True and p["timeout"] is None
    assert abs(p["created_at"] - time.time()) < 5 and p["enqueued_at"] == p["created_at"]
    assert r.smembers(ns.keys.queues) == {"default"}


def test_options_from_decorator_and_set(ns, r):
    jobs.on_other_queue.enqueue("x")
    jobs.record.set(queue="low", retries=0, timeout=2.5, dead=False).enqueue("a", "b")
    [other] = queued(r, ns, "other")
    [low] = queued(r, ns, "low")
    assert other["name"] == "tests.jobs.on_other_queue"
    assert (low["retries"], low["timeout"], low["dead"]) == (0, 2.5, False)
    assert queued(r, ns) == []


def test_kwargs_and_nested_values_round_trip(ns, r):
    value = {"a": [1, 2.5, None, True, {"b": "é"}], "n": -3}
    jobs.record.enqueue(key="k", value=value)
    [p] = queued(r, ns)
    assert p["kwargs"] == {"key": "k", "value": value}


@pytest.mark.parametrize(
    "bad, word",
    [
        ({1, 2}, "set"),
        (dt.datetime.now(), "datetime"),
        (object(), "object"),
        (float("nan"), "float"),
        ((1, 2), "tuple"),
        ({1: "int key"}, "dict"),
        (math.inf, "float"),
        (b"bytes", "bytes"),
    ],
)
def test_non_json_argument_raises_type_error_and_pushes_nothing(ns, r, bad, word):
    with pytest.raises(TypeError, match=r"argument 1 \(" + word):
        jobs.record.enqueue("k", bad)
    with pytest.raises(TypeError, match="keyword argument 'value'"):
        jobs.record.enqueue(key="k", value=bad)
    assert r.exists(ns.keys.queue("default")) == 0


def test_enqueue_in_and_at_go_to_the_schedule(ns, r):
    before = time.time()
    jid1 = jobs.record.enqueue_in(60, "k", "1")
    jid2 = jobs.record.enqueue_in(dt.timedelta(minutes=2), "k", "2")
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    jid3 = jobs.record.enqueue_at(when, "k", "3")
    jid4 = jobs.record.enqueue_at(time.time() + 30, "k", "4")
    scheduled = {json.loads(raw)["jid"]: score for raw, score in r.zrange(ns.keys.schedule, 0, -1, withscores=True)}
    assert scheduled[jid1] == pytest.approx(before + 60, abs=2)
    assert scheduled[jid2] == pytest.approx(before + 120, abs=2)
    assert scheduled[jid3] == pytest.approx(when.timestamp(), abs=0.01)
    assert jid4 in scheduled
    assert r.llen(ns.keys.queue("default")) == 0


def test_naive_datetime_means_utc(ns, r):
    naive = dt.datetime.utcnow() + dt.timedelta(hours=2)
    jobs.record.enqueue_at(naive, "k", "v")
    [(raw, score)] = r.zrange(ns.keys.schedule, 0, -1, withscores=True)
    assert score == pytest.approx(naive.replace(tzinfo=dt.UTC).timestamp(), abs=0.01)


def test_a_past_time_enqueues_at_once(ns, r):
    jobs.record.enqueue_at(time.time() - 10, "k", "v")
    jobs.record.enqueue_in(-5, "k", "w")
    assert len(queued(r, ns)) == 2 and r.zcard(ns.keys.schedule) == 0


def test_enqueue_bulk_all_or_nothing(ns, r):
    jids = jobs.record.enqueue_bulk([("k", str(i)) for i in range(2500)])
    assert len(set(jids)) == 2500
    assert [p["jid"] for p in queued(r, ns)] == jids
    with pytest.raises(TypeError, match="item 1"):
        jobs.record.enqueue_bulk([("k", "fine"), ("k", {1, 2})])
    assert r.llen(ns.keys.queue("default")) == 2500


def test_plain_call_runs_inline(ns, r, tkey):
    jobs.record(tkey("inline-key"), "v")
    assert r.lrange(tkey("inline-key"), 0, -1) == ["v"]
    assert r.llen(ns.keys.queue("default")) == 0


def test_name_override_and_registry(ns):
    @job(name="custom.name", queue="q1")
    def f(x):
        return x * 2

    assert f.name == "custom.name" and f.queue == "q1" and f(4) == 8
    from jiggler_gevent.job import lookup

    assert lookup("custom.name") is f


def test_bad_options_are_refused(ns):
    with pytest.raises(ValueError, match="retries"):
        jobs.record.set(retries=-1)
    with pytest.raises(ValueError, match="queue"):
        jobs.record.set(queue="")
    with pytest.raises(TypeError, match="unknown job option"):
        jobs.record.set(colour=3)


def test_unreachable_redis_raises_a_clear_error_naming_the_job(ns):
    from jiggler_gevent import config
    from jiggler_gevent.demo import local_redis

    cfg = config.Config(redis_url=f"redis://127.0.0.1:{local_redis.free_port()}/0", namespace=ns.namespace)
    with pytest.raises(EnqueueError, match=r"tests\.jobs\.record.*127\.0\.0\.1"):
        Client(cfg).push(payload.build("tests.jobs.record", ["k", "v"]))


def test_configure_again_applies_to_what_comes_after(ns, r):
    from jiggler_gevent import configure

    configure(namespace=ns.namespace + "-b")
    try:
        jobs.record.enqueue("k", "v")
        assert r.llen(f"{ns.namespace}-b:queue:default") == 1
        assert r.llen(ns.keys.queue("default")) == 0
    finally:
        r.delete(f"{ns.namespace}-b:queue:default", f"{ns.namespace}-b:queues", f"{ns.namespace}-b:wake")
        configure(namespace=ns.namespace)


def test_url_lookup_order(monkeypatch):
    from jiggler_gevent.config import resolve_redis_url

    monkeypatch.delenv("JIGGLER_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_redis_url() == "redis://localhost:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://b/1")
    assert resolve_redis_url() == "redis://b/1"
    monkeypatch.setenv("JIGGLER_REDIS_URL", "redis://a/2")
    assert resolve_redis_url() == "redis://a/2"
    assert resolve_redis_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def test_argument_checks_are_remembered_per_shape_and_stay_right(ns):
    @job(name="test.shape")
    def shaped(a, b=1, *, c=2):
        return a

    assert shaped.arguments_error([1], {}) is None
    assert shaped.arguments_error([1, 2], {"c": 3}) is None
    error = shaped.arguments_error([1, 2, 3], {})
    assert "too many positional arguments" in error and "shaped(a, b=1, *, c=2)" in error
    assert (
        shaped.arguments_error([], {"b": 1})
        == "arguments do not match shaped(a, b=1, *, c=2): missing a required argument: 'a'"
    )
    assert shaped.arguments_error([9], {}) is None  # the same shape again, other values
    assert "unexpected keyword argument 'd'" in shaped.arguments_error([1], {"d": 1})
    for n in range(200):  # a producer sending ever new keyword names cannot grow the memory without bound
        assert f"'k{n}'" in shaped.arguments_error([1], {f"k{n}": 0})
    assert len(shaped._shape_errors) == SHAPES_REMEMBERED


@pytest.mark.parametrize(
    "args, kwargs, reason",
    [
        (("k", "v", "one too many"), {}, "too many positional arguments"),
        (("k", "v"), {"colour": "red"}, "unexpected keyword argument 'colour'"),
        (("k",), {}, "missing a required argument: 'value'"),
    ],
    ids=["one-too-many", "unknown-keyword", "missing-required"],
)
def test_arguments_that_cannot_bind_raise_type_error_and_push_nothing(ns, r, args, kwargs, reason):
    call = jobs.record.set(queue="low")
    verbs = {
        "enqueue": lambda: jobs.record.enqueue(*args, **kwargs),
        "enqueue_in": lambda: jobs.record.enqueue_in(60, *args, **kwargs),
        "enqueue_at": lambda: jobs.record.enqueue_at(time.time() + 60, *args, **kwargs),
        "enqueue_at (past)": lambda: jobs.record.enqueue_at(0, *args, **kwargs),
        "set().enqueue": lambda: call.enqueue(*args, **kwargs),
        "set().enqueue_in": lambda: call.enqueue_in(60, *args, **kwargs),
    }
    for verb, push in verbs.items():
        with pytest.raises(TypeError, match="cannot enqueue tests.jobs.record: arguments do not match") as exc:
            push()
        assert reason in str(exc.value), verb
    if not kwargs:  # enqueue_bulk takes positional tuples: the bad one is named, and none of the batch is pushed
        with pytest.raises(TypeError, match=f"enqueue_bulk item 1: cannot enqueue.*{reason}"):
            jobs.record.enqueue_bulk([("k", "fine"), args])
    assert [k for k in r.scan_iter(f"{ns.namespace}:*")] == []
    assert jobs.record.enqueue("k", "v") and jobs.record.enqueue(key="k", value="v")  # what binds still pushes
    assert len(queued(r, ns)) == 2


def test_pushes_share_one_client_until_the_settings_change(ns, r, monkeypatch):
    from jiggler_gevent import client, config

    jobs.record.enqueue("k", "1")
    first = client.current()
    assert client.current() is first and first.cfg is ns
    moved = config.configure(namespace=f"{ns.namespace}-moved")
    try:
        jobs.record.enqueue("k", "2")
        assert client.current() is not first and client.current().keys.namespace == moved.namespace
        assert [json.loads(raw)["args"] for raw in r.lrange(moved.keys.queue("default"), 0, -1)] == [["k", "2"]]
        assert len(queued(r, ns)) == 1
    finally:
        r.delete(moved.keys.queue("default"), moved.keys.queues)


def test_the_cached_client_follows_the_url_of_the_environment(redis_url, monkeypatch):
    from jiggler_gevent import client, config

    config.reset()
    monkeypatch.setenv("JIGGLER_REDIS_URL", "redis://127.0.0.1:1/0")
    assert client.current().url == "redis://127.0.0.1:1/0"
    monkeypatch.setenv("JIGGLER_REDIS_URL", redis_url)
    assert client.current().url == redis_url
    config.reset()


def test_sidekiq_push_follows_configure_between_pushes(ns, r):
    from jiggler_gevent import config, sidekiq

    first = sidekiq.push("HardJob", [1], queue="rb")
    moved = config.configure(namespace=f"{ns.namespace}-moved")
    try:
        second = sidekiq.push("HardJob", [2], queue="rb")
        for cfg, jid in ((ns, first), (moved, second)):
            [raw] = r.lrange(config.sidekiq_keys(cfg.namespace).queue("rb"), 0, -1)
            assert json.loads(raw)["jid"] == jid and json.loads(raw)["class"] == "HardJob"
    finally:
        r.delete(config.sidekiq_keys(moved.namespace).queue("rb"), config.sidekiq_keys(moved.namespace).queues)


def test_pushes_from_many_threads_at_once_all_land_once(ns, r):
    import threading

    def push_many(t):
        for i in range(200):
            jobs.record.enqueue("k", f"{t}-{i}")

    threads = [threading.Thread(target=push_many, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = sorted(p["args"][1] for p in queued(r, ns))
    assert values == sorted(f"{t}-{i}" for t in range(8) for i in range(200))


def test_a_push_after_its_kept_connection_was_killed_reconnects(ns, r):
    from jiggler_gevent import client

    jobs.record.enqueue("k", "1")
    _, kept = r.__dict__[client._KEPT]
    assert r.client_kill_filter(_id=kept.client_id()) == 1
    jobs.record.enqueue("k", "2")
    assert [p["args"] for p in queued(r, ns)] == [["k", "1"], ["k", "2"]]


def test_a_forked_child_pushes_on_its_own_connection(ns, r):
    import os

    jobs.record.enqueue("k", "parent-before")
    pid = os.fork()
    if pid == 0:
        try:
            jobs.record.enqueue("k", "child")
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    jobs.record.enqueue("k", "parent-after")
    assert sorted(p["args"][1] for p in queued(r, ns)) == ["child", "parent-after", "parent-before"]


def test_celery_calls_delay_and_apply_async_push_as_the_enqueue_verbs_do(ns, r):
    jid = jobs.record.delay("k", "now")
    before = time.time()
    in_a_minute = jobs.record.apply_async(("k", "later"), countdown=60)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    at_eta = jobs.record.apply_async(args=["k"], kwargs={"value": "eta"}, eta=when)
    low = jobs.record.set(retries=1).apply_async(("k", "low"), queue="low")
    [p] = queued(r, ns)
    assert p["jid"] == jid and p["args"] == ["k", "now"]
    [q] = queued(r, ns, "low")
    assert q["jid"] == low and q["retries"] == 1
    scheduled = {json.loads(raw)["jid"]: score for raw, score in r.zrange(ns.keys.schedule, 0, -1, withscores=True)}
    assert scheduled[in_a_minute] == pytest.approx(before + 60, abs=2)
    assert scheduled[at_eta] == pytest.approx(when.timestamp(), abs=0.01)
    with pytest.raises(ValueError, match="countdown or eta"):
        jobs.record.apply_async(("k", "x"), countdown=1, eta=when)
    with pytest.raises(TypeError, match="arguments do not match"):
        jobs.record.apply_async(("only one",))
    with pytest.raises(ValueError, match="priority must be an int"):
        jobs.record.apply_async(("k", "x"), priority=500)
    expiring = jobs.record.apply_async(("k", "expiring"), expires=30)
    [_, e] = queued(r, ns)
    assert e["jid"] == expiring and e["expires_at"] == pytest.approx(time.time() + 30, abs=5), e
    assert len(queued(r, ns)) == 2 and r.zcard(ns.keys.schedule) == 2, "the refused calls pushed nothing"


AENQUEUE = """
import asyncio, json, socket, sys, time
import redis
from jiggler_gevent import configure
from tests import jobs

configure(redis_url=sys.argv[1], namespace=sys.argv[2])


async def main():
    gaps, stop = [], asyncio.Event()

    async def tick():
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    redis.Redis.from_url(sys.argv[1]).execute_command("CLIENT", "PAUSE", 1500, "WRITE")  # the push must wait
    started = time.perf_counter()
    jid = await jobs.record.aenqueue("k", "now")
    took = time.perf_counter() - started
    later = await jobs.record.aenqueue_in(60, "k", "later")
    try:
        await jobs.record.aenqueue("only one")
        error = None
    except TypeError as exc:
        error = str(exc)
    stop.set()
    await ticker
    print(json.dumps({"jid": jid, "later": later, "took": took, "worst_gap": max(gaps), "error": error,
                      "unpatched": socket.socket.__module__ == "socket"}))


asyncio.run(main())
"""


def test_aenqueue_pushes_from_asyncio_without_blocking_its_event_loop(ns, r):
    done = subprocess.run(
        [sys.executable, "-c", AENQUEUE, ns.url, ns.namespace], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["unpatched"] is True
    assert found["took"] >= 1.2, "the push waited for the paused server"
    # a loop blocked by the push would stall as long as the push waited (1.2 s or more); ticks every 5 ms otherwise,
    # late by a scheduler's delay at worst on a loaded machine
    assert found["worst_gap"] < 0.6, f"the event loop stalled for {found['worst_gap']:.3f}s while the push waited"
    assert [p["jid"] for p in queued(r, ns)] == [found["jid"]]
    assert [json.loads(raw)["jid"] for raw in r.zrange(ns.keys.schedule, 0, -1)] == [found["later"]]
    assert "arguments do not match" in found["error"]
