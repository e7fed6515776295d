"""The Acker and settle() (server/acker.py) in-process on a real Redis: acknowledgements ride on the next fetch
while one is coming, and are written at once when none is (the fetcher waits on an empty queue, backs off or
stopped) or when a job failed; each disposition lands where it belongs, only for a payload still held; a batch
that cannot reach Redis is kept until it can be written."""

import json
import time

import gevent
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jiggler_gevent import config, scripts
from jiggler_gevent.demo import local_redis
from jiggler_gevent.middleware import Disposition
from jiggler_gevent.server import acker as acker_mod
from jiggler_gevent.server import ending
from jiggler_gevent.server.acker import FULL, Acker, Outcome
from jiggler_gevent.server.fetch import ReliableFetch
from tests.conftest import gevent_wait_for as wait_for


@pytest.fixture
def parts(ns):
    client = config.redis_client(ns.url)
    fetch = ReliableFetch(client, ns.keys, "test-acker", [("default", 1)])
    acker = Acker(client, ns.keys, fetch.working)
    runner = gevent.spawn(acker.run)
    yield client, fetch, acker
    acker.close()
    runner.join(5)
    runner.kill()
    fetch.conn.close()  # the dedicated connections go back to the shared pool
    acker.conn.close()


def hold(client, fetch, *raws):
    client.lpush(fetch.working, *raws)


def settle():
    """Let the Acker greenlet run everything it has been woken for."""
    for _ in range(5):
        gevent.sleep(0.01)


def test_plain_acks_wait_for_the_fetch_that_carries_them(parts):
    client, fetch, acker = parts
    hold(client, fetch, "a", "b")
    acker.ride(True)
    acker.add(Outcome("a"))
    acker.add(Outcome("b"))
    settle()
    assert sorted(client.lrange(fetch.working, 0, -1)) == ["a", "b"]  # not written by the Acker
    acks = acker.take_plain()
    assert acks == [b"a", b"b"] and acker.pending == []
    assert fetch.take(0, acks) == []
    assert client.llen(fetch.working) == 0


def test_a_tracked_jobs_end_rides_too_and_is_written_in_the_write_of_the_next_fetch(parts, ns):
    """A job done with a status to write (or a batch, a lock) waits for the fetcher like a plain acknowledgement:
    its settle goes in the same write as the fetch, which finds the payload gone from the working list."""
    client, fetch, acker = parts
    raw = '{"jid":"d1","name":"j","queue":"default","result_ttl":60}'
    hold(client, fetch, raw, "plain")
    client.lpush(ns.keys.queue("default"), "next")
    acker.ride(True)
    acker.add(Outcome(raw, end=ending.Ending("d1", ttl=60, detail="42")))
    acker.add(Outcome("plain"))
    settle()
    assert sorted(client.lrange(fetch.working, 0, -1)) == sorted([raw, "plain"])  # not written by the Acker
    acks, ends = acker.take_plain(), acker.take_ends()
    assert acks == [b"plain"] and [o.raw for o in ends] == [raw] and acker.pending == []
    assert fetch.take(1, acks, ends) == ["next"]
    assert client.lrange(fetch.working, 0, -1) == ["next"]
    assert client.hmget(ns.keys.result("d1"), "status", "result") == ["done", "42"]


def test_plain_acks_are_written_when_the_fetcher_stops_riding(parts):
    client, fetch, acker = parts
    hold(client, fetch, "a")
    acker.ride(True)
    acker.add(Outcome("a"))
    settle()
    assert client.llen(fetch.working) == 1
    acker.ride(False)
    wait_for(lambda: client.llen(fetch.working) == 0, 5, "the Acker to write the acknowledgement")


def test_a_failed_jobs_outcome_is_written_at_once_even_while_riding(parts, ns):
    client, fetch, acker = parts
    hold(client, fetch, "ok", "bad")
    acker.ride(True)
    acker.add(Outcome("ok"))
    acker.add(Outcome.dead("bad", '{"jid": "bad"}', time.time()))
    wait_for(lambda: client.llen(fetch.working) == 0, 5, "both outcomes written")
    assert client.zrange(ns.keys.dead, 0, -1) == ['{"jid": "bad"}']


def test_with_no_fetcher_riding_every_ack_is_written_at_once(parts):
    client, fetch, acker = parts
    hold(client, fetch, "a")
    acker.add(Outcome("a"))
    wait_for(lambda: client.llen(fetch.working) == 0, 5, "the acknowledgement")


# -- settle(): each disposition, in one script call ------------------------------------------------------


def namespace_keys(client, ns):
    return set(client.scan_iter(f"{ns.namespace}:*"))


@pytest.mark.parametrize(
    "outcome, stored",
    [
        (Outcome("held"), None),
        (Outcome("held", Disposition.DROP), None),
        (Outcome.retry("held", "new", 1234.5), ("retry", 1234.5)),
        (Outcome.dead("held", "new", time.time()), ("dead", None)),
        (Outcome.requeue("held", "new", "elsewhere"), ("queue", None)),
    ],
    ids=["ack", "drop", "retry", "dead", "requeue"],
)
def test_settle_writes_each_disposition_where_it_belongs(parts, ns, outcome, stored):
    client, fetch, _ = parts
    keys = ns.keys
    hold(client, fetch, "held", "other")
    client.lpush(keys.queue("elsewhere"), "queued-before")
    before = namespace_keys(client, ns)
    assert settle_outcomes(client, ns, fetch, [outcome]) == 1
    assert client.lrange(fetch.working, 0, -1) == ["other"]
    added = namespace_keys(client, ns) - before
    queue = client.lrange(keys.queue("elsewhere"), 0, -1)
    if stored is None:
        assert added == set() and queue == ["queued-before"]  # stored nowhere
    elif stored[0] == "retry":
        assert client.zrange(keys.retry, 0, -1, withscores=True) == [("new", stored[1])]
        assert added == {keys.retry} and queue == ["queued-before"]
    elif stored[0] == "dead":
        assert client.zrange(keys.dead, 0, -1, withscores=True) == [("new", outcome.where)]
        assert added == {keys.dead} and queue == ["queued-before"]
    else:
        assert queue == ["queued-before", "new"]  # at the front (the right end): taken next
        assert client.smembers(keys.queues) == {"elsewhere"} and added == {keys.queues, keys.wake}  # wakes a worker


def settle_outcomes(client, ns, fetch, outcomes):
    return acker_mod.settle(scripts.register(client).settle, ns.keys, fetch.working, outcomes)


@pytest.mark.parametrize("make", [Outcome.retry, Outcome.dead], ids=["retry", "dead"])
def test_an_outcome_for_a_payload_not_held_stores_nothing(parts, ns, make):
    client, fetch, _ = parts
    hold(client, fetch, "someone-else's")
    before = namespace_keys(client, ns)
    outcomes = [make("not-held", "new", time.time()), Outcome.requeue("not-held", "new", "q"), Outcome("not-held")]
    assert settle_outcomes(client, ns, fetch, outcomes) == 0
    assert namespace_keys(client, ns) == before
    assert client.lrange(fetch.working, 0, -1) == ["someone-else's"]


def test_an_outcome_written_twice_stores_once(parts, ns):
    client, fetch, _ = parts
    hold(client, fetch, "held")
    outcome = Outcome.dead("held", "new", time.time())
    assert settle_outcomes(client, ns, fetch, [outcome, outcome]) == 1
    assert settle_outcomes(client, ns, fetch, [outcome]) == 0
    assert client.zcard(ns.keys.dead) == 1


# -- give_back, and a Redis that cannot be reached --------------------------------------------------------


def test_given_back_acks_are_pending_again_and_written_when_riding_stops(parts, ns):
    client, fetch, acker = parts
    raw_bytes = b'{"jid":"x","name":"j","odd":"\xff"}'
    client.lpush(fetch.working, raw_bytes)  # bytes go in as they are
    (raw,) = fetch.held()
    acker.ride(True)
    acker.add(Outcome(raw))
    acks = acker.take_plain()
    assert acks == [raw_bytes] and acker.holding() == []
    acker.give_back(acks)  # the fetch that was to carry them failed
    assert acker.holding() == [raw] and all(o.plain for o in acker.pending)
    settle()
    assert client.llen(fetch.working) == 1  # still riding: waits for the next fetch
    acker.ride(False)
    wait_for(lambda: client.llen(fetch.working) == 0, 5, "the given-back acknowledgement written")


def test_a_flush_that_cannot_reach_redis_keeps_the_batch_then_drain_writes_it(parts, ns):
    client, fetch, _ = parts
    hold(client, fetch, "done", "failed")
    acker = Acker(client, ns.keys, fetch.working)
    reachable = acker.conn
    # Nothing listens there (no retries, so the test is quick); a client, not a dedicated connection,
    # since dedicated() connects at once.
    acker.conn = redis.Redis(port=local_redis.free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    acker.add(Outcome("done"))
    acker.add(Outcome.dead("failed", '{"jid":"failed"}', time.time()))
    with pytest.raises(redis.ConnectionError):
        acker.flush()
    assert acker.holding() == ["done", "failed"] and acker.writing == []
    t0 = time.monotonic()
    assert acker.drain(time.monotonic() + 0.5) is False
    assert time.monotonic() - t0 < 3
    assert acker.holding() == ["done", "failed"]
    assert client.llen(fetch.working) == 2  # nothing written meanwhile
    acker.conn = reachable  # Redis answers again
    assert acker.drain(time.monotonic() + 5) is True
    assert acker.holding() == [] and client.llen(fetch.working) == 0
    assert client.zrange(ns.keys.dead, 0, -1) == ['{"jid":"failed"}']
    acker.conn.close()


def test_the_slot_of_a_failed_job_is_given_back_with_the_acker_s_settle(parts, ns):
    """A slot the fetch took (acker.Slots) leaves with the outcome of its payload: a failure's outcome, written by
    the Acker at once, gives it back in the same settle; a slot marked FULL (no slot taken) gives nothing back."""
    client, fetch, acker = parts
    fetch.limited = ["lim.acker", "lim.acker", 1]
    held, refused = (json.dumps({"jid": jid, "name": "lim.acker", "queue": "default"}) for jid in ("f1", "f2"))
    client.lpush(ns.keys.queue("default"), held)
    assert fetch.take(1) == [held]
    client.lpush(fetch.working, refused)  # as if a fetch had marked it refused
    acker.slots.update(fetch.slots, **{refused: FULL})
    assert client.zcard(ns.keys.limit("lim.acker")) == 1
    acker.add(Outcome.retry(held, held, time.time() + 60))
    acker.add(Outcome.reschedule(refused, refused, time.time() + 60))
    assert acker.releases == [fetch.slots[held]] and acker.slots == {}
    wait_for(lambda: client.zcard(ns.keys.limit("lim.acker")) == 0, 5, "the slot given back")
    assert client.hgetall(ns.keys.holds(fetch.identity)) == {} and acker.releases == []
    assert client.zcard(ns.keys.retry) == 1 and client.zcard(ns.keys.schedule) == 1
