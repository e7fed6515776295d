"""Server and client middleware chains, error and death handlers (in-process Processor, real Redis)."""

import dataclasses
import json

import pytest

from jiggler_gevent import config, middleware, payload
from jiggler_gevent.server.acker import Acker
from jiggler_gevent.server.job_metrics import Counters
from jiggler_gevent.server.launcher import server_chain
from jiggler_gevent.server.processor import Processor
from tests import jobs


class Recorder(middleware.ServerMiddleware):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def before_process(self, ctx):
        self.log.append(f"{self.name}.before")

    def after_process(self, ctx):
        self.log.append(f"{self.name}.after:{type(ctx.exception).__name__ if ctx.exception else 'ok'}")


class Broken(middleware.ServerMiddleware):
    def before_process(self, ctx):
        raise RuntimeError("broken before")

    def after_process(self, ctx):
        raise RuntimeError("broken after")


@pytest.fixture
def registered():
    added = []

    def add(chain, entry):
        chain.add(entry)
        added.append((chain, entry))

    yield add
    for chain, entry in added:
        chain.remove(entry)


@pytest.fixture
def handlers():
    errors, deaths = [], []
    e = lambda exc, ctx: errors.append((type(exc).__name__, ctx.jid))  # noqa: E731
    d = lambda p, exc: deaths.append(p["jid"])  # noqa: E731
    middleware.error_handlers.append(e)
    middleware.death_handlers.append(d)
    yield errors, deaths
    middleware.error_handlers.remove(e)
    middleware.death_handlers.remove(d)


def run_one(ns, raw):
    """Hold `raw` as a worker would, run it through a Processor, write its outcome."""
    client = config.redis_client(ns.url)
    working = ns.keys.working("test-proc")
    client.lpush(working, raw)
    acker = Acker(client, ns.keys, working)
    counters = Counters()
    Processor(acker, server_chain(counters)).process(raw)
    acker.flush()
    assert client.llen(working) == 0
    return counters


def make(job, *args):
    return payload.encode(
        payload.build(job.name, args, queue=job.queue, retries=job.retries, dead=job.dead, timeout=job.timeout)
    )


def test_before_in_order_after_in_reverse(ns, r, registered, tkey):
    log = []
    registered(middleware.server, Recorder("a", log))
    registered(middleware.server, Recorder("b", log))
    counters = run_one(ns, make(jobs.record, tkey("x"), "v"))
    assert log == ["a.before", "b.before", "b.after:ok", "a.after:ok"]
    assert r.lrange(tkey("x"), 0, -1) == ["v"] and counters.processed == 1


def test_a_failing_middleware_is_logged_and_the_job_still_runs(ns, r, registered, tkey, caplog):
    log = []
    registered(middleware.server, Broken())
    registered(middleware.server, Recorder("after-broken", log))
    run_one(ns, make(jobs.record, tkey("x"), "v"))
    assert r.lrange(tkey("x"), 0, -1) == ["v"]
    assert log == ["after-broken.before", "after-broken.after:ok"]
    assert "broken before" in caplog.text and "broken after" in caplog.text


@dataclasses.dataclass
class Unhashable(middleware.ServerMiddleware):
    """A dataclass with eq: unhashable, as users' middleware may well be."""

    log: list

    def after_process(self, ctx):
        self.log.append("unhashable.after")


def test_the_chain_follows_entries_changed_directly_and_unhashable_ones(ns, r, tkey):
    log = []
    chain = middleware.Chain()
    chain.entries.append(Recorder("a", log))
    chain.before("before_process", None)
    chain.entries.append(Unhashable(log))
    chain.entries.insert(0, Recorder("z", log))
    chain.before("before_process", None)
    chain.after("after_process", middleware.JobContext({}, "{}"))
    del chain.entries[1]
    chain.after("after_process", middleware.JobContext({}, "{}"))
    assert log == [
        "a.before",
        "z.before",
        "a.before",
        "unhashable.after",
        "a.after:ok",
        "z.after:ok",
        "unhashable.after",
        "z.after:ok",
    ]


def test_error_and_death_handlers_are_called_once_each(ns, r, handlers, tkey):
    errors, deaths = handlers
    raw = make(jobs.always_fail, tkey("x"))
    jid = json.loads(raw)["jid"]
    counters = run_one(ns, raw)
    assert errors == [("RuntimeError", jid)] and deaths == [jid]
    assert (counters.processed, counters.failed) == (1, 1)
    assert r.zcard(ns.keys.dead) == 1


def test_a_retried_job_calls_the_error_handler_but_not_the_death_handler(ns, r, handlers, tkey):
    errors, deaths = handlers
    run_one(ns, make(jobs.fail_times, tkey("x"), 5))
    assert len(errors) == 1 and deaths == [] and r.zcard(ns.keys.retry) == 1


def test_client_middleware_sees_and_can_change_the_payload(ns, r, registered):
    class Stamp(middleware.ClientMiddleware):
        def before_push(self, p):
            p["tenant"] = "acme"

        def after_push(self, p):
            seen.append(p["jid"])

    class BrokenClient(middleware.ClientMiddleware):
        def before_push(self, p):
            raise ValueError("client hook broke")

    seen = []
    registered(middleware.client, BrokenClient())
    registered(middleware.client, Stamp())
    jid = jobs.record.enqueue("k", "v")
    [raw] = r.lrange(ns.keys.queue("default"), 0, -1)
    assert json.loads(raw)["tenant"] == "acme" and seen == [jid]
