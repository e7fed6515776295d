"""ReliableFetch (server/fetch.py) in-process on a real Redis: payloads move atomically from their queues into this
process's working list, oldest first and queue by queue, and go back unchanged to the front of their own queue."""

import json
import random
import threading
import time
from collections import Counter

import pytest
import redis

from jiggler_gevent import config, limits, payload, scripts
from jiggler_gevent.client import Client
from jiggler_gevent.keys import SidekiqKeys
from jiggler_gevent.server import acker as acker_mod
from jiggler_gevent.server import fetch as fetch_mod
from jiggler_gevent.server import guards
from jiggler_gevent.server.fetch import ReliableFetch, queue_order


@pytest.fixture
def raw_client(ns):
    """Bytes in, bytes out: to see exactly what is stored."""
    c = redis.Redis.from_url(ns.url)
    yield c
    c.close()


def push(client, ns, queue, *raws):
    """As the client does: LPUSH, so the first given is the oldest (popped first)."""
    client.lpush(ns.keys.queue(queue), *raws)


def queued(client, ns, queue):
    """A queue's payloads, next to be taken first."""
    return client.lrange(ns.keys.queue(queue), 0, -1)[::-1]


def test_take_moves_the_oldest_payloads_into_the_working_list(make_fetch, client, ns):
    fetch = make_fetch([("default", 1)])
    push(client, ns, "default", "a", "b", "c")
    assert fetch.take(2) == ["a", "b"]
    assert queued(client, ns, "default") == ["c"]
    assert sorted(client.lrange(fetch.working, 0, -1)) == ["a", "b"]
    assert fetch.take(5) == ["c"]
    assert fetch.take(5) == [] and client.llen(fetch.working) == 3
    assert not client.exists(ns.keys.queue("default"))


def test_most_is_respected_across_queues_in_order(make_fetch, client, ns):
    fetch = make_fetch([("q1", 1), ("q2", 1), ("q3", 1)], strict=True)
    push(client, ns, "q1", "1a", "1b")
    push(client, ns, "q2", "2a", "2b", "2c")
    push(client, ns, "q3", "3a")
    assert fetch.take(0) == []
    assert fetch.take(4) == ["1a", "1b", "2a", "2b"]
    assert queued(client, ns, "q2") == ["2c"] and queued(client, ns, "q3") == ["3a"]
    assert fetch.take(4) == ["2c", "3a"]
    assert Counter(fetch.held()) == Counter(["1a", "1b", "2a", "2b", "2c", "3a"])


def test_strict_order_is_the_order_given():
    queues = [("c", 1), ("a", 100), ("b", 5)]
    assert all(queue_order(queues, strict=True) == ["c", "a", "b"] for _ in range(50))
    assert queue_order([("only", 3)], strict=False) == ["only"]


def test_weighted_order_picks_each_queue_first_in_proportion_to_its_weight():
    random.seed(20240611)
    queues = [("a", 6), ("b", 3), ("c", 1)]
    trials = 3000
    first: Counter = Counter()
    for _ in range(trials):
        order = queue_order(queues, strict=False)
        assert sorted(order) == ["a", "b", "c"]
        first[order[0]] += 1
    assert 0.52 < first["a"] / trials < 0.68, first
    assert 0.23 < first["b"] / trials < 0.37, first
    assert 0.05 < first["c"] / trials < 0.15, first


def test_weighted_fetch_takes_from_the_heavier_queue_mostly_strict_only(make_fetch, client, ns):
    random.seed(7)
    weighted = make_fetch([("hi", 9), ("lo", 1)], strict=False, identity="weighted")
    push(client, ns, "hi", *[f"hi{i}" for i in range(200)])
    push(client, ns, "lo", *[f"lo{i}" for i in range(200)])
    got = [weighted.take(1)[0] for _ in range(200)]
    from_hi = sum(1 for raw in got if raw.startswith("hi"))
    assert 160 <= from_hi <= 195, from_hi  # about 180 expected; some from lo, so it is not strict
    strict = make_fetch([("lo", 1), ("hi", 9)], strict=True, identity="strict")
    assert all(strict.take(1)[0].startswith("lo") for _ in range(20))


def test_take_with_acks_removes_them_in_the_same_call(make_fetch, client, ns):
    fetch = make_fetch([("default", 1)])
    push(client, ns, "default", "x", "y", "z")
    assert fetch.take(2) == ["x", "y"]
    assert fetch.take(1, [b"x", b"never-held"]) == ["z"]
    assert sorted(fetch.held()) == ["y", "z"]
    assert fetch.take(1, [b"y", b"z"]) == [] and fetch.held() == []


def test_commands_written_straight_on_the_connection_keep_every_byte_a_lone_surrogate_included(
    make_fetch, client, raw_client, ns
):
    fetch = make_fetch([("default", 1)])
    key = ns.keys.queue("packed")
    texts = ("plain", "caf\u00e9", "\udcff read back as it was")  # the last: a byte surrogateescape kept
    conn = fetch.conn.connection
    replies = [scripts.pipelined(conn, [("RPUSH", key, text, 1.5), ("RPUSH", key, 7)]) for text in texts]
    assert replies == [[2, 3], [5, 6], [8, 9]]  # packed by hiredis, the last by redis-py's encoder
    assert raw_client.lrange(key, 0, -1) == [b"plain", b"1.5", b"7", "caf\u00e9".encode(), b"1.5", b"7"] + [
        b"\xff read back as it was",
        b"1.5",
        b"7",
    ]


def test_wait_on_one_queue_blocks_then_returns_nothing_on_an_empty_queue(make_fetch, client, ns, monkeypatch):
    monkeypatch.setattr(fetch_mod, "SINGLE_QUEUE_BLOCK", 0.3)
    fetch = make_fetch([("default", 1)])
    t0 = time.monotonic()
    assert fetch.wait(5) == []
    assert time.monotonic() - t0 >= 0.25
    assert fetch.held() == []


def push_once_blocked(ns, fetch, command, push):
    """Call `push(client)` from a thread once the fetcher's connection is blocked in `command`; returns the thread
    and a list that collects its errors."""
    name = f"{ns.namespace}-fetcher"
    fetch.conn.client_setname(name)  # the dedicated connection keeps its name
    errors: list = []

    def pusher():
        try:
            other = redis.Redis.from_url(ns.url, decode_responses=True)
            deadline = time.monotonic() + 5
            while not any(c["name"] == name and c["cmd"] == command for c in other.client_list()):
                assert time.monotonic() < deadline, f"the fetcher never blocked in {command}"
                time.sleep(0.01)
            push(other)
            other.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=pusher)
    thread.start()
    return thread, errors


def test_wait_on_one_queue_returns_a_payload_pushed_while_it_waits(make_fetch, client, ns, monkeypatch):
    monkeypatch.setattr(fetch_mod, "SINGLE_QUEUE_BLOCK", 10)
    fetch = make_fetch([("default", 1)])
    thread, errors = push_once_blocked(ns, fetch, "blmove", lambda c: c.lpush(ns.keys.queue("default"), "late"))
    t0 = time.monotonic()
    got = fetch.wait(5)
    thread.join(10)
    assert errors == []
    assert got == ["late"] and time.monotonic() - t0 < 5
    assert fetch.held() == ["late"] and not client.exists(ns.keys.queue("default"))


@pytest.mark.parametrize("most", [5, 2])
def test_wait_on_one_queue_takes_the_rest_behind_its_blmove(make_fetch, client, ns, monkeypatch, most):
    """Three payloads pushed at once to an idle worker: BLMOVE takes the first and the fetch sent behind it the
    next ones, up to `most` in all; `drained` says whether they emptied the queue (no need to look again)."""
    monkeypatch.setattr(fetch_mod, "SINGLE_QUEUE_BLOCK", 10)
    fetch = make_fetch([("default", 1)])
    thread, errors = push_once_blocked(ns, fetch, "blmove", lambda c: c.lpush(ns.keys.queue("default"), "a", "b", "c"))
    got = fetch.wait(most)
    thread.join(10)
    assert errors == []
    assert got == ["a", "b", "c"][:most]
    assert fetch.drained is (most > 3)
    assert sorted(fetch.held()) == sorted(got) and client.llen(ns.keys.queue("default")) == 3 - len(got)


def test_the_payload_blmove_brings_is_handed_over_and_the_rest_returned(make_fetch, client, ns, monkeypatch):
    monkeypatch.setattr(fetch_mod, "SINGLE_QUEUE_BLOCK", 10)
    fetch = make_fetch([("default", 1)])
    thread, errors = push_once_blocked(ns, fetch, "blmove", lambda c: c.lpush(ns.keys.queue("default"), "a", "b"))
    handed: list[str] = []
    got = fetch.wait(5, handed.append)
    thread.join(10)
    assert errors == [] and handed == ["a"] and got == ["b"] and fetch.drained


def test_wait_on_several_queues_wakes_at_once_for_a_push_to_any_of_them(make_fetch, client, ns, monkeypatch):
    """The idle fetcher blocks on NS:wake, which the client's push sets: a job pushed to the last queue is taken at
    once, not after the block time (10 s here; 5 s is the bound, a hang detector)."""
    monkeypatch.setattr(fetch_mod, "WAKE_BLOCK", 10.0)
    fetch = make_fetch([("mail", 1), ("low", 1), ("default", 1)], strict=False)
    client.delete(ns.keys.wake)
    job_payload = payload.build("tests.jobs.record", ["k", "v"], queue="default")
    thread, errors = push_once_blocked(ns, fetch, "bzpopmin", lambda c: Client(ns).push(job_payload))
    t0 = time.monotonic()
    got = fetch.wait(3)
    thread.join(10)
    assert errors == [] and time.monotonic() - t0 < 5
    assert [json.loads(raw)["jid"] for raw in got] == [job_payload["jid"]]
    assert fetch.held() == got and not client.exists(ns.keys.wake)  # the wake-up was taken


def test_wait_on_several_queues_returns_nothing_after_the_block_time(make_fetch, client, ns, monkeypatch):
    monkeypatch.setattr(fetch_mod, "WAKE_BLOCK", 0.3)
    fetch = make_fetch([("mail", 1), ("default", 1)])
    t0 = time.monotonic()
    assert fetch.wait(5) == [] and time.monotonic() - t0 >= 0.25


def test_a_wake_up_that_finds_more_than_it_can_take_is_passed_on(make_fetch, client, ns):
    """Several idle workers, one wake-up: the one that takes all it can leaves the wake-up for the next."""
    fetch = make_fetch([("mail", 1), ("default", 1)])
    Client(ns).push_bulk([payload.build("tests.jobs.record", ["k", str(i)], queue="mail") for i in range(3)])
    assert client.zcard(ns.keys.wake) == 1
    assert len(fetch.wait(2)) == 2 and client.zcard(ns.keys.wake) == 1  # one more left: the wake-up stays
    assert len(fetch.wait(2)) == 1 and client.zcard(ns.keys.wake) == 0  # took the last: nothing to pass on


def test_requeue_puts_held_payloads_back_at_the_front_of_their_own_queue_unchanged(make_fetch, client, raw_client, ns):
    fetch = make_fetch([("default", 1), ("other", 1), ("odd", 1)])
    on_default = '{"jid":"1","name":"j","queue":"default"}'
    on_other = '{"jid":"2","name":"j","queue":"other"}'
    not_utf8 = b'{"jid":"3","name":"j","queue":"odd","x":"\xff\xfe"}'
    push(client, ns, "default", on_default)
    push(client, ns, "other", on_other)
    raw_client.lpush(ns.keys.queue("odd"), not_utf8)
    held = fetch.take(3)
    assert held == [on_default, on_other, not_utf8.decode("utf-8", "surrogateescape")]
    push(client, ns, "default", "newer-default")  # pushed meanwhile: the put-back ones must come before them
    push(client, ns, "other", "newer-other")
    raw_client.lpush(ns.keys.queue("odd"), b"newer-odd")
    assert fetch.requeue(held) == 3
    assert fetch.held() == []
    assert queued(client, ns, "default") == [on_default, "newer-default"]
    assert queued(client, ns, "other") == [on_other, "newer-other"]
    assert raw_client.lrange(ns.keys.queue("odd"), 0, -1) == [b"newer-odd", not_utf8]  # the same bytes
    assert client.smembers(ns.keys.queues) == {"default", "other", "odd"}


def test_a_payload_that_cannot_be_read_goes_back_to_the_default_queue(make_fetch, client, ns):
    fetch = make_fetch([("side", 1)])
    push(client, ns, "side", "not json")
    assert fetch.take(1) == ["not json"]
    assert fetch.requeue(["not json"]) == 1
    assert queued(client, ns, config.DEFAULT_QUEUE) == ["not json"] and queued(client, ns, "side") == []


def test_requeue_skips_a_payload_no_longer_held(make_fetch, client, ns):
    fetch = make_fetch([("default", 1)])
    mine = '{"jid":"1","name":"j","queue":"default"}'
    gone = '{"jid":"2","name":"j","queue":"default"}'
    push(client, ns, "default", mine)
    assert fetch.take(1) == [mine]
    assert fetch.requeue([mine, gone]) == 1
    assert queued(client, ns, "default") == [mine]
    assert fetch.requeue([mine]) == 0  # requeued already: not pushed twice
    assert queued(client, ns, "default") == [mine]


def test_held_lists_what_this_process_holds_and_requeue_all_returns_it(make_fetch, client, ns):
    fetch = make_fetch([("default", 1)])
    other = make_fetch([("default", 1)], identity="someone-else")
    push(client, ns, "default", "a", "b", "c", "a")
    assert fetch.held() == []
    taken = fetch.take(3)
    assert other.take(1) == ["a"]
    assert Counter(fetch.held()) == Counter(taken) == Counter(["a", "b", "c"])
    assert fetch.requeue_all() == 3
    assert fetch.held() == [] and other.held() == ["a"]
    assert queued(client, ns, "default") == ["a", "b", "c"]


def test_the_fetch_starts_a_tracked_job_and_reports_a_cancelled_one(make_fetch, client, ns):
    """A payload with result_ttl is "running" as the fetch takes it (fetch.lua), in the step that reads NS:cancelled;
    a cancelled one is reported and left unwritten; untracked and unreadable ones are left to the Processor."""
    fetch = make_fetch([("default", 1)])
    tracked = '{"jid":"t1","name":"j","queue":"default","result_ttl":60}'
    cancelled = '{"jid":"t2","name":"j","queue":"default","result_ttl":60}'
    sidekiq = '{"jid":"t3","class":"j","queue":"default","jiggler":{"result_ttl":5}}'
    not_tracked = ['{"jid":"p1","name":"j","queue":"default"}', '{"jid":"p2","result_ttl":true}', '"result_ttl" {']
    client.zadd(ns.keys.cancelled, {"t2": time.time()})
    push(client, ns, "default", tracked, cancelled, sidekiq, *not_tracked)
    assert fetch.take(10) == [tracked, cancelled, sidekiq, *not_tracked]
    assert fetch.starts == {tracked: False, cancelled: True, sidekiq: False}
    for jid in ("t1", "t3"):
        assert client.hget(ns.keys.result(jid), "status") == "running"
        assert 0 < client.ttl(ns.keys.result(jid)) <= config.RESULT_PENDING_TTL
    assert float(client.hget(ns.keys.result("t1"), "started_at")) == pytest.approx(time.time(), abs=30)
    assert [client.exists(ns.keys.result(jid)) for jid in ("t2", "p1", "p2")] == [0, 0, 0]


def test_a_tracked_job_taken_behind_a_block_starts_by_the_servers_clock(make_fetch, client, ns):
    """The fetch sent behind BZPOPMIN runs when the block ends, not when it was sent: it stamps the start with
    Redis' TIME."""
    fetch = make_fetch([("mail", 1), ("default", 1)])
    tracked = '{"jid":"w1","name":"j","queue":"mail","result_ttl":60}'
    push(client, ns, "mail", tracked)
    client.zadd(ns.keys.wake, {"wake": 0})
    assert fetch.wait(3) == [tracked] and fetch.starts == {tracked: False} and fetch.drained
    started = float(client.hget(ns.keys.result("w1"), "started_at"))
    assert started == pytest.approx(float(client.time()[0]), abs=2)


def test_the_fetch_takes_concurrency_slots_parks_past_the_limit_and_the_settle_gives_them_back(make_fetch, client, ns):
    """A payload of a job with `concurrency=N` takes a slot in the fetch (recorded under the process's identity); one
    over the full limiter is parked (scheduled, and named on the limiter) instead of taken; the next fetch gives the
    slot of a job that has ended back once, which moves the parked payload back to its queue."""
    fetch = make_fetch([("default", 1)], identity="test-slots")
    fetch.limited = ["lim.job", "lim.job", 2]  # what guards.fetch_limits says of a registered concurrency=2 job
    a, b, c = (json.dumps({"jid": f"s{i}", "name": "lim.job", "queue": "default"}) for i in range(3))
    other = '{"jid":"o1","name":"other","queue":"default","args":["lim.job"]}'  # names it in its arguments only
    push(client, ns, "default", a, b, c, other)
    assert fetch.take(4) == [a, b, other] and not fetch.drained
    assert set(fetch.slots) == {a, b}
    limit, holds = ns.keys.limit("lim.job"), ns.keys.holds("test-slots")
    assert client.zcard(limit) == 2
    assert client.hgetall(holds) == {fetch.slots[a]: "2,60000", fetch.slots[b]: "2,60000"}
    assert client.lrange(ns.keys.limit_parked("lim.job"), 0, -1) == [c]
    assert client.zscore(ns.keys.schedule, c) == pytest.approx(time.time() + guards.SLOT_TIMEOUT, abs=5)
    slot = acker_mod.slot_of(a, fetch.slots)
    assert a not in fetch.slots and slot is not None and slot.startswith("slot:lim.job:")
    assert fetch.take(0, [a.encode()], releases=[slot]) == []
    assert client.zcard(limit) == 1 and slot not in client.hgetall(holds)
    assert queued(client, ns, "default") == [c] and client.zscore(ns.keys.schedule, c) is None
    assert acker_mod.settle(fetch.scripts.settle, ns.keys, fetch.working, [], releases=[slot]) == 0
    assert client.zcard(limit) == 1  # given back once only: the other slot is still held
    other_slot = acker_mod.slot_of(b, fetch.slots)
    assert acker_mod.settle(fetch.scripts.settle, ns.keys, fetch.working, [acker_mod.Outcome(b)], releases=[other_slot])
    assert client.zcard(limit) == 0 and client.hgetall(holds) == {}


def test_a_tracked_payload_over_a_full_limiter_is_taken_and_marked_refused(make_fetch, client, ns):
    """A tracked payload is not parked by the fetch: it is taken, started, and marked FULL, so that its worker
    reschedules it and writes its status (guards.ConcurrencyMiddleware); a payload without a slot is not marked."""
    fetch = make_fetch([("default", 1)])
    fetch.limited = ["lim.job", "lim.job", 1]
    held = json.dumps({"jid": "h1", "name": "lim.job", "queue": "default"})
    tracked = json.dumps({"jid": "t1", "name": "lim.job", "queue": "default", "result_ttl": 60})
    push(client, ns, "default", held, tracked)
    assert fetch.take(2) == [held, tracked]
    assert fetch.slots[tracked] == acker_mod.FULL and fetch.slots[held].startswith("slot:lim.job:")
    assert fetch.starts == {tracked: False}
    assert client.zcard(ns.keys.limit("lim.job")) == 1 and client.zcard(ns.keys.schedule) == 0


def test_on_sidekiqs_wire_the_fetch_knows_a_limited_job_by_its_class(client, ns):
    """A Sidekiq payload names its job in `class` (with `name` free for anything else): the fetch reads that one."""
    keys = SidekiqKeys(namespace=ns.keys.namespace, prefix=f"{ns.keys.namespace}:")  # this test's own keys
    fetch = ReliableFetch(client, keys, "test-sk", [("default", 1)])
    try:
        fetch.limited = ["lim.sk", "lim.sk", 1]
        first = json.dumps({"class": "lim.sk", "jid": "k1", "queue": "default", "args": []})
        second = json.dumps({"class": "lim.sk", "jid": "k2", "queue": "default", "args": []})
        named = json.dumps({"class": "other", "name": "lim.sk", "jid": "k3", "queue": "default", "args": []})
        client.lpush(keys.queue("default"), first, second, named)
        assert fetch.take(3) == [first, named]  # `second` parked: the limiter's one slot is `first`'s
        assert set(fetch.slots) == {first}
        assert client.lrange(keys.limit_parked("lim.sk"), 0, -1) == [second]
    finally:
        fetch.conn.close()


def test_a_slot_the_fetch_took_is_renewed_as_one_the_limiter_took(make_fetch, client, ns):
    """The middleware keeps a running job's slot alive with the limiter's own renewal, whoever took it: the token
    the fetch made is pushed on, not counted twice."""
    fetch = make_fetch([("default", 1)])
    fetch.limited = ["lim.renew", "lim.renew", 1]
    raw = json.dumps({"jid": "r1", "name": "lim.renew", "queue": "default"})
    push(client, ns, "default", raw)
    assert fetch.take(1) == [raw]
    token, limit = fetch.slots[raw].split(":", 2)[2], ns.keys.limit("lim.renew")
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    client.zadd(limit, {token: now_ms + 1000})  # about to expire
    assert limits.concurrent("lim.renew", 1, lock_timeout=60).renew(token)
    assert client.zscore(limit, token) >= now_ms + 59_000 and client.zcard(limit) == 1
