"""Batches against a real Redis and real worker processes: counting, exactly-once callbacks, atomic blocks.

The jobs are in tests/batch_jobs.py; each records what it did under the test's key (see there).
"""

import datetime as dt
import json
import threading
import time

import pytest
import redis

from jiggler_gevent import Batch, api, job, scripts
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.client import Client
from jiggler_gevent.server.acker import Outcome, settle
from jiggler_gevent.server.fetch import ReliableFetch
from tests import batch_jobs
from tests.conftest import held_jobs, identity_of, wait_for

LOAD = ("-r", "tests.batch_jobs")
FAST = ("--heartbeat-interval", "0.2")  # a SIGKILLed process is presumed dead after 12 beats: 2.4 s


def _idle(r, ns) -> bool:
    """Nothing left to run: no job queued, held by a process (live or dead), scheduled or waiting to retry."""
    k = ns.keys
    queued = sum(r.llen(k.queue(q)) for q in r.smembers(k.queues))
    return queued == 0 and held_jobs(r, ns) == 0 and r.zcard(k.retry) == 0 and r.zcard(k.schedule) == 0


def _records(r, key: str, which: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(f"{key}:{which}", 0, -1)]


def _callbacks(key: str, *extra: object) -> dict:
    return {
        "on_complete": batch_jobs.on_complete,
        "on_success": batch_jobs.on_success,
        "callback_args": [key, *extra],
    }


CALLBACK_NAMES = sorted([batch_jobs.on_complete.name, batch_jobs.on_success.name])


def _queued(r, ns, queue: str = "default") -> list[dict]:
    return [json.loads(x) for x in r.lrange(ns.keys.queue(queue), 0, -1)]


@pytest.mark.slow
def test_thousand_job_batch_over_three_workers_with_one_killed(ns, r, start_worker, tkey):
    key = tkey("big")
    workers = [start_worker(*LOAD, "-c", "20", *FAST) for _ in range(3)]
    wait_for(lambda: all(identity_of(r, ns, w.pid) for w in workers), 30, "3 workers' heartbeats")
    flaky = {i for i in range(1000) if i % 100 == 37}
    batch = Batch(description="a thousand", **_callbacks(key, "big"))
    with batch:
        jids = [(batch_jobs.fails_once if i in flaky else batch_jobs.member).enqueue(key, i, 0.15) for i in range(1000)]
    assert len(set(jids)) == 1000 and api.BatchStatus(batch.bid).total == 1000

    wait_for(lambda: r.scard(key + ":ran") >= 300, 30, "300 jobs started")
    victim = workers.pop(0)
    identity = identity_of(r, ns, victim.pid)
    victim.kill()  # SIGKILL
    held_at_kill = r.llen(ns.keys.working(identity))
    assert held_at_kill > 0, "the killed worker held no job: not killed mid-batch"
    assert not api.BatchStatus(batch.bid).complete

    def finished() -> bool:
        # An operator's "retry now": the failed jobs would otherwise wait 15 s or more for their back-off.
        api.RetrySet().retry_all()
        return bool(r.llen(key + ":success")) and bool(r.llen(key + ":complete")) and _idle(r, ns)

    wait_for(finished, 60, "the batch to succeed and every queue to drain", interval=0.2)

    [complete] = _records(r, key, "complete")
    [success] = _records(r, key, "success")
    assert complete["bid"] == success["bid"] == batch.bid
    assert complete["extra"] == success["extra"] == ["big"]
    assert complete["ran"] == 1000, "on_complete ran before every job had run once"
    assert success["ok"] == 1000, "on_success ran before every job had succeeded"
    status = api.BatchStatus(batch.bid)
    assert (status.total, status.pending, status.failures, status.failed_jids) == (1000, 0, 0, [])
    assert status.complete and status.success and status.description == "a thousand"
    assert status.created_at <= status.complete_at <= status.success_at
    assert status.as_dict()["success"] is True
    assert r.scard(key + ":ran") == 1000 and r.scard(key + ":ok") == 1000  # every job ran, and succeeded
    attempts = r.hgetall(key + ":attempts")
    assert sorted(attempts) == sorted(str(i) for i in flaky) and all(int(n) >= 2 for n in attempts.values())
    # Each job runs once, plus the flaky ones' retries, plus at most the jobs the killed worker held.
    assert 1000 + len(flaky) - held_at_kill <= int(r.get(key + ":runs")) <= 1000 + len(flaky) + held_at_kill
    assert r.zcard(ns.keys.dead) == 0
    assert [w.stop() for w in workers] == [0, 0]


def _settle_together(ns, jobs: list[tuple[redis.Redis, str, Outcome]]) -> list[int]:
    """Settle each (client, identity, outcome) from its own thread, all released at the same instant."""
    barrier = threading.Barrier(len(jobs))
    results: list[int | BaseException] = [0] * len(jobs)

    def run(i: int, client: redis.Redis, identity: str, outcome: Outcome) -> None:
        script = scripts.register(client).settle
        barrier.wait(10)
        try:
            results[i] = settle(script, ns.keys, ns.keys.working(identity), [outcome], client=client)
        except BaseException as exc:  # reported by the test thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for res in results:
        if isinstance(res, BaseException):
            raise res
    return results  # type: ignore[return-value]


def _outcome(raw: str, ok: bool) -> Outcome:
    payload = json.loads(raw)
    if ok:
        return Outcome(raw).ending(payload)
    failed = dict(payload, error_class="RuntimeError", error_message="planned")
    return Outcome.dead(raw, payload_mod.encode(failed), time.time()).ending(payload)


def test_callbacks_are_enqueued_once_when_the_last_two_jobs_end_at_the_same_instant(ns, r, tkey):
    key, k = tkey("race"), ns.keys
    clients = [redis.Redis.from_url(ns.url, decode_responses=True) for _ in range(2)]
    names = {batch_jobs.on_complete.name: "complete", batch_jobs.on_success.name: "success"}
    try:
        for n in range(150):
            mode = n % 3  # 0: both succeed; 1: one succeeds, one dies; 2: both die
            batch = Batch(**_callbacks(key, n))
            with batch:
                batch_jobs.member.enqueue(key, "a")
                batch_jobs.member.enqueue(key, "b")
            raws = r.lrange(k.queue("default"), 0, -1)
            assert len(raws) == 2
            r.delete(k.queue("default"))
            r.rpush(k.working("proc-a"), raws[0])
            r.rpush(k.working("proc-b"), raws[1])
            outcomes = [_outcome(raws[0], mode < 2), _outcome(raws[1], mode == 0)]
            held = _settle_together(ns, [(clients[0], "proc-a", outcomes[0]), (clients[1], "proc-b", outcomes[1])])
            assert held == [1, 1]
            fired = [names[p["name"]] for p in _queued(r, ns)]
            assert all(p["args"] == [batch.bid, key, n] for p in _queued(r, ns))
            assert sorted(fired) == (["complete", "success"] if mode == 0 else ["complete"]), f"round {n}"
            status = api.BatchStatus(batch.bid)
            assert status.complete and status.success == (mode == 0) and status.failures == mode
            r.delete(k.queue("default"), k.dead)
    finally:
        for c in clients:
            c.close()


def test_a_job_settled_from_two_held_copies_is_counted_once(ns, r, tkey):
    key, k = tkey("twice"), ns.keys
    clients = [redis.Redis.from_url(ns.url, decode_responses=True) for _ in range(2)]
    batch = Batch(**_callbacks(key))
    with batch:
        a = batch_jobs.member.enqueue(key, "a")
        b = batch_jobs.member.enqueue(key, "b")
    raw = {json.loads(x)["jid"]: x for x in r.lrange(k.queue("default"), 0, -1)}
    r.delete(k.queue("default"))
    try:
        # Two copies of a (say, run again after its first worker was presumed dead) both succeed at once.
        r.rpush(k.working("proc-a"), raw[a])
        r.rpush(k.working("proc-b"), raw[a])
        both = [(clients[0], "proc-a", _outcome(raw[a], True)), (clients[1], "proc-b", _outcome(raw[a], True))]
        assert _settle_together(ns, both) == [1, 1]
    finally:
        for c in clients:
            c.close()
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (2, 1, 0, False, False)
    assert _queued(r, ns) == []
    # A third copy of a failing after it succeeded is not a failure.
    r.rpush(k.working("proc-c"), raw[a])
    assert settle(scripts.register(r).settle, k, k.working("proc-c"), [_outcome(raw[a], False)]) == 1
    s = api.BatchStatus(batch.bid)
    assert (s.pending, s.failures, s.complete) == (1, 0, False)
    # b dies: every job has now run once, so the batch completes (once), and does not succeed.
    r.rpush(k.working("proc-a"), raw[b])
    settle(scripts.register(r).settle, k, k.working("proc-a"), [_outcome(raw[b], False)])
    s = api.BatchStatus(batch.bid)
    assert (s.pending, s.failures, s.failed_jids, s.complete, s.success) == (1, 1, [b], True, False)
    assert [p["name"] for p in _queued(r, ns)] == [batch_jobs.on_complete.name]
    # An operator retries b from the dead set and it succeeds, twice over: success once, its failure forgotten.
    for identity in ("proc-a", "proc-b"):
        r.rpush(k.working(identity), raw[b])
        settle(scripts.register(r).settle, k, k.working(identity), [_outcome(raw[b], True)])
    s = api.BatchStatus(batch.bid)
    assert (s.pending, s.failures, s.failed_jids, s.complete, s.success) == (0, 0, [], True, True)
    assert sorted(p["name"] for p in _queued(r, ns)) == CALLBACK_NAMES
    # A payload no longer held (already settled) is not counted at all.
    assert settle(scripts.register(r).settle, k, k.working("proc-a"), [_outcome(raw[b], False)]) == 0
    assert api.BatchStatus(batch.bid).failures == 0


def test_a_member_whose_worker_dies_before_the_ack_is_counted_once(ns, r, start_worker, tkey):
    key = tkey("killed")
    batch = Batch(**_callbacks(key))
    with batch:
        batch_jobs.kills_its_worker_once.enqueue(key, "k")
        batch_jobs.member.enqueue(key, "m")
    workers = [start_worker(*LOAD, "-c", "2", *FAST) for _ in range(2)]
    wait_for(lambda: r.llen(key + ":success") and _idle(r, ns), 40, "the batch to succeed after the recovery")
    assert r.hget(key + ":attempts", "k") == "2", "the member did not run twice"
    assert sum(w.proc.poll() is not None for w in workers) == 1, "exactly one worker should have died"
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (2, 0, 0, True, True)
    [complete] = _records(r, key, "complete")
    [success] = _records(r, key, "success")
    runs = int(r.get(key + ":runs"))
    assert 3 <= runs <= 4  # k twice; m once, or twice if the killed worker held it unacknowledged
    # Its recovery (back to the queue) is not an end: the batch completes only after k's second run ended.
    assert complete["ok"] == 2 and complete["runs"] == runs and success["ok"] == 2


def test_a_job_adds_jobs_to_its_own_batch(ns, r, start_worker, tkey):
    key = tkey("children")
    batch = Batch(description="parents", **_callbacks(key))
    with batch:
        parents = [batch_jobs.adds_children.enqueue(key, p, 5, 0.3) for p in ("p0", "p1")]
    assert api.BatchStatus(batch.bid).total == 2
    start_worker(*LOAD, "-c", "10")
    wait_for(lambda: r.llen(key + ":success") and r.llen(key + ":complete") and _idle(r, ns), 30, "the batch")
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (12, 0, 0, True, True)
    [complete] = _records(r, key, "complete")
    [success] = _records(r, key, "success")
    assert complete["ran"] == 12 and success["ok"] == 12, "a callback ran before the children ended"
    assert r.smembers(key + ":ok") == {"p0", "p1"} | {f"{p}.{c}" for p in ("p0", "p1") for c in range(5)}
    assert r.scard(key + ":outside:ok") == 2  # enqueued after the block: run, but not counted
    assert len(parents) == 2
    with pytest.raises(RuntimeError, match="inside a job"):
        Batch.current()  # outside any job


def test_a_block_that_raises_pushes_nothing(ns, r, tkey):
    key, k = tkey("atomic"), ns.keys
    batch = Batch(description="atomic", **_callbacks(key))
    with pytest.raises(ValueError, match="boom"):
        with batch:
            batch_jobs.member.enqueue(key, 1)
            batch_jobs.member.enqueue_in(60, key, 2)
            batch_jobs.member.enqueue_bulk([(key, 3), (key, 4)])
            raise ValueError("boom")
    assert r.llen(k.queue("default")) == 0 and r.zcard(k.schedule) == 0
    assert not r.exists(k.batch(batch.bid)) and r.zcard(k.batches) == 0
    with pytest.raises(LookupError):
        api.BatchStatus(batch.bid)
    assert list(api.Batches()) == []
    # The same object can be used again; a job due later counts too.
    with batch:
        now = batch_jobs.member.enqueue(key, 5)
        later = batch_jobs.member.enqueue_in(60, key, 6)
    assert [p["jid"] for p in _queued(r, ns)] == [now] and _queued(r, ns)[0]["bid"] == batch.bid
    [scheduled] = [json.loads(x) for x in r.zrange(k.schedule, 0, -1)]
    assert scheduled["jid"] == later and scheduled["bid"] == batch.bid
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.complete, s.description) == (2, 2, False, "atomic")
    with pytest.raises(RuntimeError, match="already pushed"):
        with batch:
            pass
    # Outside a block a push goes straight to its queue, without a batch.
    batch_jobs.member.enqueue(key, 7)
    assert "bid" not in _queued(r, ns)[0] and api.BatchStatus(batch.bid).total == 2


def test_a_zero_job_batch_completes_at_once(ns, r, start_worker, tkey):
    key = tkey("empty")
    batch = Batch(description="nothing", **_callbacks(key, {"x": [1, 2]}))
    with batch:
        pass
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (0, 0, 0, True, True)
    queued = _queued(r, ns)
    assert sorted(p["name"] for p in queued) == CALLBACK_NAMES
    assert all(p["args"] == [batch.bid, key, {"x": [1, 2]}] and "bid" not in p for p in queued)
    assert [b.bid for b in api.Batches()] == [batch.bid]
    start_worker(*LOAD, "-c", "2")
    wait_for(lambda: r.llen(key + ":complete") and r.llen(key + ":success") and _idle(r, ns), 20, "both callbacks")
    [complete] = _records(r, key, "complete")
    [success] = _records(r, key, "success")
    assert complete["bid"] == success["bid"] == batch.bid
    assert complete["extra"] == success["extra"] == [{"x": [1, 2]}]


def test_nested_blocks_raise_and_push_nothing(ns, r, tkey):
    key = tkey("nested")
    outer, inner = Batch(**_callbacks(key)), Batch(**_callbacks(key))
    with pytest.raises(RuntimeError, match="nested"):
        with outer:
            batch_jobs.member.enqueue(key, 1)
            with inner:
                batch_jobs.member.enqueue(key, 2)
    assert r.llen(ns.keys.queue("default")) == 0 and r.zcard(ns.keys.batches) == 0
    with pytest.raises(LookupError):
        api.BatchStatus(outer.bid)
    with outer:  # the blocks are usable again after the failed nesting
        batch_jobs.member.enqueue(key, 3)
    assert api.BatchStatus(outer.bid).total == 1


@pytest.mark.parametrize(
    "options",
    [
        {"callback_args": [{1, 2}]},
        {"callback_args": ("x", dt.datetime.now(dt.UTC))},
        {"callback_args": [float("nan")]},
        {"callback_args": [{"deep": [1, float("inf")]}]},
        {"callback_args": [(1, 2)]},  # a tuple comes back a list
        {"callback_args": "not-a-sequence"},
        {"on_success": print},
        {"on_complete": batch_jobs.not_a_job},
        {"description": 42},
    ],
    ids=["set", "datetime", "nan", "nested-inf", "tuple", "string", "print", "plain-function", "description"],
)
def test_bad_input_raises_type_error_and_writes_nothing(ns, r, options):
    with pytest.raises(TypeError):
        Batch(**options)
    assert list(r.scan_iter(f"{ns.namespace}:*")) == []


def test_a_dead_or_dropped_member_completes_the_batch_but_it_never_succeeds(ns, r, start_worker, tkey):
    key = tkey("dead")
    batch = Batch(**_callbacks(key))
    with batch:
        batch_jobs.member.enqueue(key, "ok")
        dead = batch_jobs.dies.enqueue(key, "dead")
        dropped = batch_jobs.vanishes.enqueue(key, "dropped")
    start_worker(*LOAD, "-c", "3")
    wait_for(lambda: r.llen(key + ":complete") and r.scard(key + ":ran") == 3 and _idle(r, ns), 20, "completion")
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (3, 2, 2, True, False)
    assert s.failed_jids == sorted([dead, dropped]) and s.success_at is None
    [complete] = _records(r, key, "complete")
    assert complete["ran"] == 3 and complete["bid"] == batch.bid
    assert _records(r, key, "success") == []
    assert [e.jid for e in api.DeadSet()] == [dead]


@job
def not_loaded_by_workers(key: str) -> None:
    """Registered in the test process only: the workers (-r tests.batch_jobs) do not know this job."""


def test_an_unrunnable_member_counts_as_a_failure(ns, r, start_worker, tkey):
    key = tkey("unrunnable")
    batch = Batch(**_callbacks(key))
    with batch:
        batch_jobs.member.enqueue(key, "ok")
        unknown = not_loaded_by_workers.enqueue(key)
        # enqueue() refuses arguments that do not bind; a raw push (as another producer could make) reaches the
        # worker, which checks again and buries it as unrunnable.
        bad_arguments = Client().push(payload_mod.build(batch_jobs.member.name, []))
    start_worker(*LOAD, "-c", "2")
    wait_for(lambda: r.zcard(ns.keys.dead) == 2 and r.scard(key + ":ok") == 1 and _idle(r, ns), 20, "2 jobs buried")
    wait_for(lambda: r.llen(key + ":complete"), 10, "on_complete after the unrunnable jobs were buried")
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.complete, s.success) == (3, 2, 2, True, False)
    assert s.failed_jids == sorted([unknown, bad_arguments])
    assert sorted(e.jid for e in api.DeadSet()) == s.failed_jids
    assert _records(r, key, "success") == []


def test_a_cancelled_member_counts_as_a_failure(ns, r, start_worker, tkey):
    key, k = tkey("cancel"), ns.keys
    batch = Batch(**_callbacks(key))
    with batch:
        batch_jobs.member.enqueue(key, "a")
        cancelled = batch_jobs.member.enqueue(key, "c")
    assert api.Job(cancelled).cancel() is True
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.failed_jids, s.complete) == (2, 2, 1, [cancelled], False)
    assert _queued(r, ns)[0]["jid"] != cancelled and len(_queued(r, ns)) == 1
    # A batch whose every member is cancelled completes from the cancellation itself.
    key2 = tkey("cancel-all")
    all_cancelled = Batch(**_callbacks(key2))
    with all_cancelled:
        only = batch_jobs.member.enqueue(key2, "x")
    assert api.Job(only).cancel() is True
    s2 = api.BatchStatus(all_cancelled.bid)
    assert (s2.pending, s2.failures, s2.complete, s2.success) == (1, 1, True, False)
    assert batch_jobs.on_complete.name in [p["name"] for p in _queued(r, ns)]

    start_worker(*LOAD, "-c", "2")
    wait_for(
        lambda: r.llen(key + ":complete") and r.llen(key2 + ":complete") and _idle(r, ns), 20, "both batches complete"
    )
    s = api.BatchStatus(batch.bid)
    assert (s.pending, s.failures, s.complete, s.success) == (1, 1, True, False)
    assert r.smembers(key + ":ran") == {"a"} and not r.exists(key2 + ":ran")  # the cancelled never started
    assert len(_records(r, key, "complete")) == 1 and len(_records(r, key2, "complete")) == 1
    assert _records(r, key, "success") == [] and _records(r, key2, "success") == []
    assert r.zcard(k.dead) == 0 and r.zcard(k.retry) == 0
    assert api.Job(cancelled).status == "cancelled"


def test_a_member_cancelled_while_running_counts_as_a_failure(ns, r, start_worker, tkey):
    key = tkey("cancel-running")
    batch = Batch(**_callbacks(key))
    with batch:
        quick = batch_jobs.member.enqueue(key, "quick")
        slow = batch_jobs.member.enqueue(key, "slow", 30)
    start_worker(*LOAD, "-c", "2")
    wait_for(lambda: api.Job(slow).status == "running" and r.sismember(key + ":ok", "quick"), 20, "the slow one runs")
    assert not api.BatchStatus(batch.bid).complete
    assert api.Job(slow).cancel() is True
    wait_for(lambda: r.llen(key + ":complete") and _idle(r, ns), 20, "completion after the cancellation")
    s = api.BatchStatus(batch.bid)
    assert (s.total, s.pending, s.failures, s.failed_jids, s.complete, s.success) == (2, 1, 1, [slow], True, False)
    assert r.smembers(key + ":ok") == {"quick"} and quick not in s.failed_jids
    assert _records(r, key, "success") == [] and r.zcard(ns.keys.dead) == 0


def test_status_of_an_unknown_batch_raises_lookup_error(ns, r):
    with pytest.raises(LookupError):
        api.BatchStatus("no-such-batch")
    with pytest.raises(LookupError):
        api.BatchStatus(payload_mod.new_jid())
    assert list(api.Batches()) == [] and len(api.Batches()) == 0
    first, second = Batch(description="first"), Batch(description="second")
    for b in (first, second):
        with b:
            pass
        time.sleep(0.01)  # distinct creation times, for the order below
    assert [b.description for b in api.Batches()] == ["second", "first"] and len(api.Batches()) == 2


def test_a_member_that_succeeded_is_counted_once_by_the_fetch_that_carries_its_acknowledgement(ns, r, tkey):
    """A member done with nothing else to write rides the next fetch, which counts it in the same step that settles
    it (fetch.lua, as settle.lua would): callbacks enqueued exactly once, a payload no longer held not counted."""
    key, k = tkey("carried"), ns.keys
    batch = Batch(**_callbacks(key))
    with batch:
        a = batch_jobs.member.enqueue(key, "a")
        b = batch_jobs.member.enqueue(key, "b")
    fetch = ReliableFetch(r, k, "proc-f", [("default", 1)])
    try:
        raw = {json.loads(x)["jid"]: x for x in fetch.take(2)}
        done_a, done_b = _outcome(raw[a], True), _outcome(raw[b], True)
        assert done_a.member and done_b.member and not _outcome(raw[a], False).member
        assert fetch.take(0, ends=[done_a]) == []
        s = api.BatchStatus(batch.bid)
        assert (s.pending, s.complete, s.success) == (1, False, False) and _queued(r, ns) == []
        assert fetch.take(0, ends=[done_a]) == []  # carried again: no longer held, not counted again
        assert api.BatchStatus(batch.bid).pending == 1
        assert fetch.take(0, ends=[done_b]) == []
        s = api.BatchStatus(batch.bid)
        assert (s.pending, s.complete, s.success) == (0, True, True)
        assert sorted(p["name"] for p in _queued(r, ns)) == CALLBACK_NAMES
        assert fetch.take(0, ends=[done_b]) == [] and len(_queued(r, ns)) == 2  # each callback once
        assert fetch.held() == []
    finally:
        fetch.conn.close()
