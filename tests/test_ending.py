"""The end of a job (server/ending.py): one Ending per finished job, built from the payload's view and the
disposition, giving its part of settle.lua's ARGV; a job that uses no lock, tracking, batch or limiter has none."""

import pytest

from jiggler_gevent import payload as payload_mod
from jiggler_gevent.errors import CancelJob
from jiggler_gevent.keys import Keys
from jiggler_gevent.limits import OverLimit
from jiggler_gevent.middleware import Disposition, JobContext
from jiggler_gevent.server import ending
from jiggler_gevent.server.acker import Outcome

KEYS = Keys("ns")
FULL = {"jid": "j1", "name": "app.a", "unique_key": "d1", "unique_until": "success", "result_ttl": 2.5, "bid": "b1"}


def _ctx(payload: dict, exception: BaseException | None = None, result: object = None) -> JobContext:
    ctx = JobContext(dict(payload), "raw")
    ctx.exception, ctx.result = exception, result
    return ctx


def test_a_plain_job_has_no_ending_and_its_outcome_stays_plain():
    ctx = _ctx({"jid": "j", "name": "app.a"})
    assert ending.of_run(ctx, Disposition.ACK, KEYS) is None
    assert Outcome("raw").plain and Outcome("raw").argv()[4:] == ending.NONE


@pytest.mark.parametrize(
    ("disposition", "lock", "detail"),
    [
        (Disposition.ACK, "ns:unique:d1", '"r"'),
        (Disposition.DEAD, "ns:unique:d1", '{"error_class":"ValueError","error_message":"bad"}'),
        (Disposition.DROP, "ns:unique:d1", '{"error_class":"ValueError","error_message":"bad"}'),
        (Disposition.RETRY, "", ""),  # a retry keeps its lock and writes no error yet
    ],
)
def test_a_job_ending_releases_its_lock_writes_its_status_and_counts_in_its_batch(disposition, lock, detail):
    end = ending.of_run(_ctx(FULL, ValueError("bad") if disposition != "ack" else None, "r"), disposition, KEYS)
    assert end is not None and end.argv() == (lock, "j1", "b1", 3, detail, "")


def test_a_lock_released_at_start_is_not_released_again_but_one_cancelled_before_it_started_is():
    at_start = dict(FULL, unique_until="start")
    assert ending.of_run(_ctx(at_start, result="r"), Disposition.ACK, KEYS).lock == ""
    end = ending.of_unstarted(_ctx(at_start), KEYS)
    cancelled = payload_mod.encode({"error_class": "JobCancelled", "error_message": "job j1 was cancelled"})
    assert end is not None and end.argv() == ("ns:unique:d1", "j1", "b1", 3, cancelled, "")
    assert ending.error(_ctx(FULL), CancelJob("x")) == cancelled


def test_a_reschedule_over_a_full_concurrent_limiter_is_parked_on_it_even_without_other_features():
    ctx = _ctx({"jid": "j", "name": "app.a"}, OverLimit("one", "concurrent", 1.0))
    end = ending.of_run(ctx, Disposition.RESCHEDULE, KEYS)
    assert end is not None and end.argv() == ("", "j", "", "", "", "one")
    ctx = _ctx({"jid": "j", "name": "app.a"}, OverLimit("w", "window", 1.0))
    assert ending.of_run(ctx, Disposition.RESCHEDULE, KEYS) is None


def test_an_unrunnable_payload_keeps_its_lock_and_a_put_back_one_writes_no_detail():
    end = ending.of_unrunnable(FULL, "no job named 'app.a'")
    assert end is not None and end.lock == "" and '"PayloadError"' in end.detail and end.bid == "b1"
    back = ending.of_put_back(FULL)
    assert back is not None and back.argv() == ("", "j1", "b1", 3, "", "")
    assert ending.of_unrunnable({"jid": "j", "name": "x"}, "why") is None


@pytest.mark.parametrize("ttl", [None, 0, -1, "3", True, float("inf")])
def test_a_payload_without_a_valid_result_ttl_is_not_tracked_anywhere(ttl):
    view = payload_mod.View({"jid": "j", "name": "x", "result_ttl": ttl})
    assert not view.tracked and view.result_ttl is None
