"""The Acker in-process on a real Redis: acknowledgements ride on the next fetch while one is coming, and are
written at once when none is (the fetcher waits on an empty queue, backs off or stopped) or when a job failed."""

import time

import gevent
import pytest

from jiggler_gevent import config
from jiggler_gevent.server.acker import Acker, Outcome
from jiggler_gevent.server.fetch import ReliableFetch


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


def hold(client, fetch, *raws):
    client.lpush(fetch.working, *raws)


def wait_for(predicate, timeout, message):
    """Poll with gevent.sleep, so the Acker greenlet runs meanwhile (this process is not monkey-patched)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {message}"
        gevent.sleep(0.01)


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
