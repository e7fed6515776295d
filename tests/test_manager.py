"""The Manager (server/manager.py) in-process on a real Redis, its parts built by hand as server/launcher.py does.

The test process is not monkey-patched: jobs here wait with gevent.sleep, greenlets are driven with gevent.sleep,
and a Redis call blocks the whole process. So the fetcher's wait on an empty queue (a BLMOVE and the fetch
behind it, tested in test_fetch.py) is replaced by a short gevent.sleep and then a take() of what came meanwhile,
and the other greenlets run while it waits, as they do in a patched worker.
"""

import json
import time
from collections import Counter
from types import SimpleNamespace

import gevent
import gevent.event
import pytest

from jiggler_gevent import config, job
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.server.acker import Acker, Outcome
from jiggler_gevent.server.fetch import ReliableFetch
from jiggler_gevent.server.job_metrics import Counters
from jiggler_gevent.server.launcher import server_chain
from jiggler_gevent.server.manager import Manager
from jiggler_gevent.server.processor import Processor
from tests.conftest import gevent_wait_for as wait_for

STATE = SimpleNamespace(active=0, peak=0, done=0, seen=[])
GATE = gevent.event.Event()  # what `gated` waits for


@job(retries=0)
def counted(seconds: float) -> None:
    """Count how many run at once, and how many finished."""
    STATE.active += 1
    STATE.peak = max(STATE.peak, STATE.active)
    try:
        gevent.sleep(seconds)
    finally:
        STATE.active -= 1
    STATE.done += 1


@job(retries=0)
def looks_around(working: str) -> None:
    """Record, a few times while it runs, how many `counted` jobs run beside it and how many payloads are held."""
    for _ in range(5):
        STATE.seen.append((STATE.active, config.redis_client().llen(working)))
        gevent.sleep(0.04)


@job
def gated() -> None:
    GATE.wait()


@pytest.fixture
def build(ns):
    """build(concurrency) -> a Manager on the test namespace, not started; stopped and cleaned up after the test."""
    STATE.active = STATE.peak = STATE.done = 0
    STATE.seen = []
    GATE.clear()
    made: list[Manager] = []

    def make(concurrency: int) -> Manager:
        client = config.redis_client(ns.url)
        fetch = ReliableFetch(client, ns.keys, f"test-manager-{len(made)}", [("default", 1)])
        fetch.wait = lambda most, hand=None, fetch=fetch: idle_wait(fetch, most)
        acker = Acker(client, ns.keys, fetch.working)
        processor = Processor(acker, server_chain(Counters()))
        made.append(Manager(fetch, processor, acker, concurrency))
        return made[-1]

    yield make
    GATE.set()
    for m in made:
        m.stop(0)
        gevent.killall([g for g in (*m.workers, m.fetcher, m.acker_greenlet) if g is not None], timeout=5)
        m.fetch.conn.close()  # the dedicated connections go back to the shared pool
        m.acker.conn.close()


def idle_wait(fetch: ReliableFetch, most: int) -> list[str]:
    gevent.sleep(0.005)
    return fetch.take(most)


def queued(r, ns):
    return r.lrange(ns.keys.queue("default"), 0, -1)


def test_concurrency_is_never_exceeded_and_nothing_waits_unstarted(build, r, ns):
    manager = build(4)
    counted.enqueue_bulk([(0.02,)] * 40)
    worst = SimpleNamespace(working=0, in_memory=0)

    def sample():
        while True:
            worst.working = max(worst.working, r.llen(manager.fetch.working))
            worst.in_memory = max(worst.in_memory, manager.inbox.qsize() + manager.busy, sum(manager.in_hand.values()))
            gevent.sleep(0.001)

    sampler = gevent.spawn(sample)
    try:
        manager.start()
        wait_for(lambda: STATE.done == 40, message="40 jobs done")
        wait_for(lambda: r.llen(manager.fetch.working) == 0, message="every acknowledgement written")
    finally:
        sampler.kill()
    assert STATE.peak == 4  # all four workers were busy at once, never a fifth
    assert worst.working <= 4, worst
    assert 0 < worst.in_memory <= 4, worst
    assert queued(r, ns) == []


def test_quiet_stops_fetching_and_lets_the_running_job_finish(build, r, ns):
    manager = build(2)
    counted.enqueue(0.3)
    manager.start()
    wait_for(lambda: STATE.active == 1, message="the job to start")
    fetcher = manager.fetcher
    manager.quiet()
    assert manager.fetcher is None and fetcher.dead
    counted.enqueue_bulk([(0,)] * 3)
    wait_for(lambda: STATE.done == 1, message="the running job to finish")
    wait_for(lambda: r.llen(manager.fetch.working) == 0, message="its acknowledgement written")
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # nothing is fetched any more, however long we wait
        assert len(queued(r, ns)) == 3 and STATE.done == 1
        gevent.sleep(0.02)
    assert all(not w.dead for w in manager.workers)


def test_quiet_before_start_holds_once_it_starts(build, r, ns):
    """A worker lists its heartbeat before its Manager starts: a TSTP in between quiets it for good."""
    manager = build(2)
    counted.enqueue_bulk([(0,)] * 3)
    manager.quiet()
    manager.start()
    assert manager.fetcher is None
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # nothing is fetched, however long we wait
        assert len(queued(r, ns)) == 3 and STATE.done == 0
        gevent.sleep(0.02)
    assert all(not w.dead for w in manager.workers)


def test_stop_lets_running_jobs_finish_within_the_timeout(build, r, ns):
    manager = build(3)
    counted.enqueue_bulk([(0.2,)] * 3)
    manager.start()
    wait_for(lambda: STATE.active == 3, message="three jobs running")
    t0 = time.monotonic()
    assert manager.stop(5) == 0
    assert time.monotonic() - t0 < 4
    assert STATE.done == 3
    assert all(w.dead for w in manager.workers)
    assert r.llen(manager.fetch.working) == 0 and queued(r, ns) == []


def test_stop_puts_back_unchanged_what_did_not_finish_in_time(build, r, ns):
    manager = build(3)
    counted.enqueue_bulk([(0.2,), (30,), (30,)])
    long_ones = [raw for raw in queued(r, ns) if json.loads(raw)["args"] == [30]]
    manager.start()
    wait_for(lambda: STATE.active == 3, message="three jobs running")
    t0 = time.monotonic()
    assert manager.stop(1.0) == 2
    assert 0.9 < time.monotonic() - t0 < 10
    assert STATE.done == 1  # the short one finished; the long ones were stopped
    assert Counter(queued(r, ns)) == Counter(long_ones)  # the same bytes, back in their queue
    assert r.llen(manager.fetch.working) == 0
    assert r.zcard(ns.keys.retry) == 0 and r.zcard(ns.keys.dead) == 0  # not counted as failures
    assert all(w.dead for w in manager.workers)


def test_orphans_of_a_lost_fetch_reply_are_put_back_and_nothing_else(build, r, ns):
    manager = build(4)  # not started: the test plays the fetcher
    working, queue = manager.fetch.working, ns.keys.queue("default")

    def raw(jid: str) -> str:
        return json.dumps({"jid": jid, "name": counted.name, "args": [0], "queue": "default"})

    orphan, running, done, failed, twice = (raw(j) for j in ("orphan", "running", "done", "failed", "twice"))
    not_utf8 = b'{"jid":"odd","queue":"default","x":"\xff"}'
    odd = not_utf8.decode("utf-8", "surrogateescape")  # as the client reads it; written back as the same bytes
    r.lpush(working, orphan, running, done, failed, twice, twice, odd)
    r.lpush(queue, "queued-before")
    manager.in_hand[running] = 1
    manager.in_hand[twice] = 1  # one of the two copies runs; the other was taken by the lost fetch
    manager.acker.ride(True)
    manager.acker.add(Outcome(done))  # a plain acknowledgement the fetcher is to carry
    manager.acker.add(Outcome(odd))
    manager.acker.add(Outcome.retry(failed, failed, time.time() + 60))  # an outcome the Acker has yet to write

    acks = manager.acker.take_plain()  # as the fetcher does, after a failed fetch
    manager._put_back_orphans(acks)

    back, *put_back = queued(r, ns)
    assert back == "queued-before" and Counter(put_back) == Counter([orphan, twice])  # at the front: taken next
    left = Counter(r.lrange(working, 0, -1))
    assert left == Counter([running, done, failed, twice, odd])
    assert manager.acker.holding() == [failed]
    assert manager.fetch.take(0, acks) == [] and r.llen(working) == 3  # the carried acks go with the next fetch


def test_a_job_that_ends_while_orphans_are_counted_is_not_put_back(build, r, ns):
    manager = build(2)  # not started: the test plays the fetcher and one worker
    gated.enqueue()
    (raw,) = manager.fetch.take(1)
    manager.idle.acquire(blocking=False)  # handed to a worker, as the fetcher does
    manager.in_hand[raw] = 1
    worker = gevent.spawn(manager._run_one, raw)
    wait_for(lambda: manager.processor.running_job(worker), message="the job to start")
    real_held = manager.fetch.held

    def held_with_a_round_trip() -> list[str]:
        """In a patched worker, other greenlets run while the reply travels: here the job ends meanwhile."""
        held = real_held()
        GATE.set()
        worker.join(5)
        return held

    manager.fetch.held = held_with_a_round_trip
    manager._put_back_orphans(manager.acker.take_plain())  # as the fetcher does, after a failed fetch
    assert worker.successful() and [o.raw for o in manager.acker.pending] == [raw]  # its outcome is pending
    assert queued(r, ns) == []  # so it is no orphan: put back, it would run a second time


def test_the_fetcher_carries_plain_acknowledgements_under_load(build, r, ns):
    manager = build(5)
    flushes: list[int] = []
    carried: list[int] = []
    flush, take = manager.acker.flush, manager.fetch.take

    def counting_flush() -> None:
        flushes.append(len(manager.acker.pending))
        flush()

    def counting_take(most, acks=(), ends=(), releases=()):
        carried.append(len(acks))
        return take(most, acks, ends, releases)

    manager.acker.flush = counting_flush
    manager.fetch.take = counting_take
    counted.enqueue_bulk([(0,)] * 200)
    manager.start()
    wait_for(lambda: STATE.done == 200, message="200 jobs done")
    wait_for(lambda: r.llen(manager.fetch.working) == 0, message="every acknowledgement written")
    written_by_acker = sum(flushes)
    assert sum(carried) + written_by_acker == 200, (carried, flushes)
    assert sum(carried) >= 180, (carried, flushes)  # nearly all rode on a fetch
    assert len([n for n in flushes if n]) <= 5, flushes  # the Acker's own script calls: a handful, not one per job


def test_a_suspect_job_runs_alone(build, r, ns):
    """A job held at two deaths (recovery.py) waits for the jobs fetched with it, and nothing is fetched until it
    has ended: while it runs, this process holds it and nothing else."""
    manager = build(4)
    counted.enqueue_bulk([(0.3,)] * 3)
    suspect = payload_mod.build(looks_around.name, [manager.fetch.working])
    suspect["recoveries"] = config.SUSPECT_DEATHS
    r.lpush(ns.keys.queue("default"), payload_mod.encode(suspect))
    counted.enqueue_bulk([(0.05,)] * 3)  # queued behind it: fetched only once it has ended
    manager.start()
    wait_for(lambda: STATE.done == 6 and len(STATE.seen) == 5, message="every job done")
    assert STATE.seen == [(0, 1)] * 5
    wait_for(lambda: r.llen(manager.fetch.working) == 0, message="every acknowledgement written")


def test_after_a_fetch_that_emptied_the_queues_the_fetcher_blocks_again_at_once(build, r, ns):
    """An idle worker makes no fetch that would find the queues empty again: it goes back to its wait (block, then
    fetch), and the Acker writes the acknowledgements meanwhile, as none rides a fetch then."""
    manager = build(5)
    outside: list[int] = []  # the fetches the Manager made itself, not the one each wait makes behind its block
    waits: list[int] = []
    take, wait = manager.fetch.take, manager.fetch.wait
    waiting = [False]

    def counting_take(most, acks=(), ends=(), releases=()):
        if not waiting[0]:
            outside.append(most)
        return take(most, acks, ends, releases)

    def counting_wait(most, hand=None):
        waits.append(most)
        waiting[0] = True
        try:
            return wait(most, hand)
        finally:
            waiting[0] = False

    manager.fetch.take, manager.fetch.wait = counting_take, counting_wait
    manager.start()
    wait_for(lambda: len(waits) >= 2, message="the fetcher waiting")
    for n in range(1, 4):
        counted.enqueue(0)
        wait_for(lambda: STATE.done == n, message=f"job {n} done")  # noqa: B023
        wait_for(lambda: r.llen(manager.fetch.working) == 0, message=f"job {n} acknowledged")
    assert len(outside) == 1, (outside, waits)  # the first one, as it started; then only waits
    assert len(waits) >= 4, waits


def test_a_fetch_that_fails_with_a_bug_of_ours_is_retried_and_what_it_took_is_put_back(build, r, ns, caplog):
    """Not only Redis errors: whatever a fetch raises, the fetcher backs off, logs it with its traceback, puts back
    what the failed fetch had moved, and goes on fetching (it used to end, leaving a process that ran nothing)."""
    manager = build(3)
    take = manager.fetch.take
    failed: list[int] = []

    def failing_once(most, acks=(), ends=(), releases=()):
        taken = take(most, acks, ends, releases)
        if not failed:
            failed.append(len(taken))
            raise ValueError("a reply this fetch could not read")  # after Redis moved the payloads
        return taken

    manager.fetch.take = failing_once
    for _ in range(4):
        counted.enqueue(0)
    with caplog.at_level("ERROR", logger="jiggler_gevent.manager"):
        manager.start()
        wait_for(lambda: STATE.done == 4, timeout=15, message="every job run after the failed fetch")
    assert failed == [3]  # the failed fetch had taken three payloads: they were put back and ran
    assert any("a reply this fetch could not read" in rec.getMessage() and rec.exc_info for rec in caplog.records)
    wait_for(lambda: r.llen(manager.fetch.working) == 0 and r.llen(ns.keys.queue("default")) == 0, message="all done")


def test_join_says_every_worker_finished_once_they_all_have_whatever_the_timeout(build):
    manager = build(50)
    manager.start()
    manager.quiet()
    assert manager.join(None) is True
    # gevent.joinall(dead, timeout=0) can time out before its links run and leave some out: join must not trust it
    assert all(manager.join(0) for _ in range(500))
