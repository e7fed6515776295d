"""jiggler_gevent.testing: inline and fake modes."""

import asyncio

import pytest

from jiggler_gevent import job, testing
from tests import jobs

AWAITED: list = []  # what `remember` appended, once its coroutine ran


@job
async def remember(value: str) -> str:
    await asyncio.sleep(0)
    AWAITED.append(value)
    return value


def test_inline_runs_at_enqueue_time(ns, r, tkey):
    with testing.inline():
        jobs.record.enqueue(tkey("inline"), "a")
        jobs.record.enqueue_in(3600, tkey("inline"), "b")
        with pytest.raises(RuntimeError, match="always fails"):
            jobs.always_fail.enqueue(tkey("x"))
    assert r.lrange(tkey("inline"), 0, -1) == ["a", "b"]
    assert r.llen(ns.keys.queue("default")) == 0 and r.zcard(ns.keys.schedule) == 0


def test_fake_records_and_drains(ns, r, tkey):
    with testing.fake() as queue:
        jobs.record.enqueue(tkey("fake"), "a")
        jobs.record.enqueue_bulk([(tkey("fake"), "b"), (tkey("fake"), "c")])
        jobs.nap.enqueue_in(10, tkey("naps"), 0)
        assert queue.names() == ["tests.jobs.record"] * 3 + ["tests.jobs.nap"]
        assert [p["args"][1] for p in queue.for_job(jobs.record)] == ["a", "b", "c"]
        assert queue.for_job(jobs.nap)[0]["at"] > 0
        assert r.llen(tkey("fake")) == 0
        assert queue.drain() == 4 and len(queue) == 0
    assert r.lrange(tkey("fake"), 0, -1) == ["a", "b", "c"]
    assert r.llen(ns.keys.queue("default")) == 0


def test_fake_drains_higher_priorities_first_and_equals_in_order(ns, r, tkey):
    with testing.fake() as queue:
        for priority, value in [(0, "p0-a"), (-5, "m5"), (10, "p10-a"), (0, "p0-b"), (10, "p10-b")]:
            jobs.record.set(priority=priority).enqueue(tkey("order"), value)
        assert queue.drain() == 5
    assert r.lrange(tkey("order"), 0, -1) == ["p10-a", "p10-b", "p0-a", "p0-b", "m5"]


def test_modes_still_check_arguments(ns):
    with testing.fake() as queue:
        with pytest.raises(TypeError):
            jobs.record.enqueue("k", {1})
        assert len(queue) == 0


def test_inline_and_fake_run_async_jobs_to_their_end():
    AWAITED.clear()
    with testing.inline():
        remember.enqueue("inline")
    with testing.fake() as queue:
        remember.enqueue("fake")
        assert AWAITED == ["inline"]
        assert queue.drain() == 1
    assert AWAITED == ["inline", "fake"]


def test_inline_runs_an_async_job_enqueued_from_a_running_loop():
    AWAITED.clear()

    async def caller() -> None:
        remember.enqueue("from a loop")
        await remember.aenqueue("through aenqueue")

    with testing.inline():
        asyncio.run(caller())
    assert AWAITED == ["from a loop", "through aenqueue"]
