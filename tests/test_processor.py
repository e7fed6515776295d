"""The Processor (server/processor.py) in-process on a real Redis: what becomes of a payload that cannot run, of a
job that raises, and the seam for stopping a running job (running_job, interrupt, abandon, call_site).

The test process is not monkey-patched: jobs here wait with gevent, and greenlets are driven with gevent.sleep.
The Acker is not started: each test reads the outcomes it was given, then writes them with flush().
"""

import asyncio
import json
import sys
import time

import gevent
import gevent.event
import greenlet
import pytest
from greenlet import GreenletExit

from jiggler_gevent import config, job, middleware
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.errors import JobTimeout
from jiggler_gevent.middleware import Disposition
from jiggler_gevent.server import async_jobs
from jiggler_gevent.server.acker import Acker
from jiggler_gevent.server.fetch import ReliableFetch
from jiggler_gevent.server.job_metrics import Counters
from jiggler_gevent.server.launcher import server_chain
from jiggler_gevent.server.processor import Processor
from tests import jobs
from tests.conftest import gevent_wait_for as wait_for

GATE = gevent.event.Event()  # what `gated` waits for
CODES: list = []  # the code objects of the stack `frames_up` ran on


@job
def add(a: int, b: int) -> int:
    return a + b


@job
def boom(message: str) -> None:
    raise ValueError(message)


@job(retries=0)
def sleeper(seconds: float) -> None:
    gevent.sleep(seconds)


@job
def gated() -> None:
    GATE.wait()


AWAITED: list = []  # what the coroutine `returns_coroutine` hands back recorded as it ran


async def _awaited() -> str:
    await asyncio.sleep(0.01)
    AWAITED.append("ran")
    return "awaited"


def _wrapped_coroutine():
    return _awaited()


@job(name="tests.test_processor.returns_coroutine")
def returns_coroutine() -> object:
    """A plain function that hands back a coroutine, as a sync wrapper around an async one does."""
    return _wrapped_coroutine()


@job
def frames_up() -> None:
    f = sys._getframe()
    while f is not None:
        CODES.append(f.f_code)
        f = f.f_back


class Parts:
    def __init__(self, ns) -> None:
        self.client = config.redis_client(ns.url)
        self.ns = ns
        self.fetch = ReliableFetch(self.client, ns.keys, "test-processor", [("default", 1)])
        self.acker = Acker(self.client, ns.keys, self.fetch.working)
        self.counters = Counters()
        self.failures = 0
        self.processor = Processor(self.acker, server_chain(self.counters), on_failure=self.failed)
        self.greenlets: list = []

    def failed(self, entry: dict) -> None:
        self.failures += 1

    def held(self, raw: str) -> str:
        """Push `raw` and fetch it, as the fetcher would: now it is held."""
        self.client.lpush(self.ns.keys.queue("default"), raw)
        assert self.fetch.take(1) == [raw]
        return raw

    def fetched(self, func, *args) -> str:
        func.enqueue(*args)
        (raw,) = self.fetch.take(1)
        return raw

    def spawn(self, *raws: str):
        glet = gevent.spawn(lambda: [self.processor.process(raw) for raw in raws])
        self.greenlets.append(glet)
        return glet

    def dispositions(self) -> list:
        return [o.disposition for o in self.acker.pending]

    def stored(self, key: str) -> list:
        """Flush the outcomes, then the payloads of a sorted set (decoded) with their scores."""
        self.acker.flush()
        return [(json.loads(raw), score) for raw, score in self.client.zrange(key, 0, -1, withscores=True)]


@pytest.fixture
def parts(ns):
    GATE.clear()
    CODES.clear()
    p = Parts(ns)
    yield p
    GATE.set()
    gevent.killall(p.greenlets, timeout=5)
    p.fetch.conn.close()  # the dedicated connections go back to the shared pool
    p.acker.conn.close()


def unknown_job() -> str:
    return payload_mod.encode(payload_mod.build("tests.nowhere.missing", [1]))


def wrong_arguments() -> str:
    return payload_mod.encode(payload_mod.build(add.name, [1]))


@pytest.mark.parametrize(
    "make_raw, reason",
    [
        (lambda: "{not json", "payload is not valid JSON"),
        (unknown_job, "no job named 'tests.nowhere.missing' is registered"),
        (wrong_arguments, "arguments do not match add"),
    ],
    ids=["not-json", "unknown-job", "wrong-arguments"],
)
def test_a_payload_that_cannot_run_goes_to_the_dead_set_with_its_reason(parts, monkeypatch, make_raw, reason):
    deaths: list = []
    monkeypatch.setattr(middleware, "death_handlers", [lambda payload, exc: deaths.append((payload, exc))])
    raw = parts.held(make_raw())
    parts.processor.process(raw)
    assert parts.failures == 1 and (parts.counters.processed, parts.counters.failed) == (0, 0)  # counted once
    assert parts.dispositions() == [Disposition.DEAD]
    ((entry, died_at),) = parts.stored(parts.ns.keys.dead)
    assert entry["error_class"] == "PayloadError" and reason in entry["error_message"], entry
    assert entry["raw"] == raw and abs(died_at - time.time()) < 60
    assert parts.fetch.held() == []
    assert len(deaths) == 1 and deaths[0][0]["raw"] == raw


def test_a_job_that_raises_is_retried_and_the_error_handler_is_called(parts, monkeypatch):
    errors: list = []
    monkeypatch.setattr(middleware, "error_handlers", [lambda exc, ctx: errors.append((exc, ctx.jid))])
    raw = parts.fetched(boom, "planned")
    parts.processor.process(raw)
    assert parts.dispositions() == [Disposition.RETRY]
    assert (parts.counters.processed, parts.counters.failed, parts.failures) == (1, 1, 0)
    ((entry, due),) = parts.stored(parts.ns.keys.retry)
    assert entry["retry_count"] == 0 and entry["error_class"] == "ValueError" and entry["error_message"] == "planned"
    assert time.time() + 10 < due < time.time() + 30  # 15 s + up to 10 s for the first retry
    assert len(errors) == 1 and isinstance(errors[0][0], ValueError) and errors[0][1] == entry["jid"]
    assert parts.fetch.held() == []


@pytest.mark.parametrize(
    "func, name", [(jobs.raise_system_exit, "SystemExit"), (jobs.raise_greenlet_exit, "GreenletExit")]
)
def test_a_job_raising_a_process_or_greenlet_exit_itself_is_a_failure(parts, tkey, func, name):
    raw = parts.fetched(func, tkey("runs"))
    parts.processor.process(raw)  # returns: nothing a job raises escapes
    assert parts.client.llen(tkey("runs")) == 1
    assert parts.dispositions() == [Disposition.RETRY]
    ((entry, _),) = parts.stored(parts.ns.keys.retry)
    assert entry["error_class"] == name


def test_when_stopping_greenlet_exit_passes_and_nothing_is_settled(parts):
    raw = parts.fetched(sleeper, 30)
    glet = parts.spawn(raw)
    wait_for(lambda: parts.processor.running_job(glet), 5, message="the job to start")
    parts.processor.stopping = True
    glet.kill(block=True, timeout=5)
    assert glet.dead and isinstance(glet.value, GreenletExit)
    assert parts.acker.pending == [] and parts.fetch.held() == [raw]  # held: the shutdown puts it back
    assert parts.processor.running_job(glet) is None


def test_running_job_names_the_job_while_it_runs_and_interrupt_stops_a_sleeping_job(parts):
    raw = parts.fetched(sleeper, 30)
    jid = json.loads(raw)["jid"]
    glet = parts.spawn(raw)
    ctx = wait_for(lambda: parts.processor.running_job(glet), 5, message="the job to start")
    assert ctx.jid == jid and ctx.name == sleeper.name and ctx.raw == raw
    assert parts.processor.interrupt(glet, RuntimeError("stop now")) is True
    glet.join(5)
    assert glet.successful()
    assert parts.processor.running_job(glet) is None
    assert parts.dispositions() == [Disposition.DEAD]  # as if it had raised: retries=0
    ((entry, _),) = parts.stored(parts.ns.keys.dead)
    assert (entry["error_class"], entry["error_message"]) == ("RuntimeError", "stop now")
    assert parts.processor.interrupt(glet, RuntimeError("again")) is False
    assert parts.processor.interrupt(gevent.getcurrent(), RuntimeError("not a job")) is False


def test_an_interrupt_never_lands_in_the_next_job_of_the_same_greenlet(parts):
    first = parts.fetched(gated)
    second = parts.fetched(sleeper, 0.1)
    glet = parts.spawn(first, second)
    wait_for(lambda: parts.processor.running_job(glet), 5, message="the first job to start")
    GATE.set()  # the first job ends in the next hub callback, before the interrupt's
    assert parts.processor.interrupt(glet, RuntimeError("meant for the first job")) is True
    glet.join(5)
    assert glet.successful()
    assert parts.dispositions() == [Disposition.ACK, Disposition.ACK]
    assert [o.raw for o in parts.acker.pending] == [first, second]


def test_abandon_writes_the_failure_at_once_and_only_once(parts):
    raw = parts.fetched(gated)
    glet = parts.spawn(raw)
    ctx = wait_for(lambda: parts.processor.running_job(glet), 5, message="the job to start")
    exc = JobTimeout("found no safe point", 0.3)
    assert parts.processor.abandon(glet, exc) is ctx
    assert parts.dispositions() == [Disposition.RETRY] and ctx.exception is exc
    assert parts.processor.abandon(glet, exc) is None  # once
    assert not glet.dead  # it goes on running
    GATE.set()
    glet.join(5)
    assert glet.successful() and parts.processor.running_job(glet) is None
    assert parts.dispositions() == [Disposition.RETRY]  # nothing more when it finally ended
    assert (parts.counters.processed, parts.counters.failed) == (1, 1)
    ((entry, _),) = parts.stored(parts.ns.keys.retry)
    assert entry["error_class"] == "JobTimeout" and parts.fetch.held() == []
    assert parts.processor.abandon(glet, exc) is None  # no job now


def test_call_site_is_the_frame_that_calls_job_functions(parts):
    parts.processor.process(parts.fetched(frames_up))
    assert parts.dispositions() == [Disposition.ACK]
    call_site = parts.processor.call_site
    assert call_site in CODES
    assert CODES[: CODES.index(call_site)] == [frames_up.func.__code__]  # the job's own frames begin right there


class WaitingBefore(middleware.ServerMiddleware):
    """A user's middleware whose before hook waits (as one that does I/O does), until `release` is set; it notes
    whether an exception reached it while it waited."""

    def __init__(self) -> None:
        self.entered, self.release = gevent.event.Event(), gevent.event.Event()
        self.interrupted: BaseException | None = None

    def before_process(self, ctx) -> None:
        self.entered.set()
        try:
            self.release.wait(5)
        except BaseException as exc:
            self.interrupted = exc
            raise


def test_an_interrupt_during_a_before_hook_still_ends_the_job(parts):
    hook = WaitingBefore()
    parts.processor.chain.entries.insert(2, hook)
    raw = parts.fetched(sleeper, 0.3)
    glet = parts.spawn(raw)
    wait_for(hook.entered.is_set, 5, message="the before hook to wait")
    assert parts.processor.interrupt(glet, RuntimeError("stop now")) is True
    glet.join(5)
    assert isinstance(hook.interrupted, RuntimeError), "the interrupt landed in the hook"
    assert parts.dispositions() == [Disposition.DEAD]  # as if it had raised (retries=0)


def test_a_job_whose_function_returns_a_coroutine_runs_it_to_its_end(parts, recwarn):
    AWAITED.clear()
    raw = parts.fetched(returns_coroutine)
    parts.processor.process(raw)
    assert parts.dispositions() == [Disposition.ACK]
    assert AWAITED == ["ran"]
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_other_greenlets_keep_the_threads_running_loop_once_the_worker_has_its_loop():
    """Playwright's sync API marks its loop running from one greenlet and reads it from another, as CPython keeps
    it per thread: the worker's loop must not change what they see (it used to, and Playwright failed)."""
    assert async_jobs.run(_awaited()) == "awaited"  # the worker's loop exists now
    loop, seen = asyncio.new_event_loop(), []

    def other() -> None:
        seen.append(asyncio._get_running_loop())
        asyncio._set_running_loop(None)

    asyncio._set_running_loop(loop)
    try:
        greenlet.greenlet(other).switch()
        seen.append(asyncio._get_running_loop())
    finally:
        asyncio._set_running_loop(None)
        loop.close()
    assert seen == [loop, None], "the running loop is the thread's, as without the worker's loop"
    assert async_jobs.run(_awaited()) == "awaited"  # and the worker's loop still runs its coroutines


def test_async_generator_and_generator_functions_are_refused_as_jobs_when_decorated():
    async def fetch_pages(url):
        yield url

    def rows(table):
        yield table

    with pytest.raises(TypeError, match="fetch_pages is an async generator function"):
        job(fetch_pages)
    with pytest.raises(TypeError, match="rows is a generator function"):
        job(rows)
    assert not any(name.endswith(("fetch_pages", "rows")) for name in jobs_registered())


def jobs_registered():
    from jiggler_gevent.job import _registry

    return list(_registry)
