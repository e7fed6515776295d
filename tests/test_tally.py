"""The tally (server/tally.py): one decision per finished job, and both sinks, the per-minute metrics in Redis
(Counters) and Prometheus (JobMetrics), record the same job, failure and run-time bucket for every outcome."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from jiggler_gevent import config
from jiggler_gevent.errors import JobTimeout
from jiggler_gevent.limits import OverLimit
from jiggler_gevent.middleware import Disposition, JobContext
from jiggler_gevent.server.job_metrics import FAILED, HISTOGRAM, ROW, RUNS, Counters
from jiggler_gevent.server.prometheus import JobMetrics
from jiggler_gevent.server.tally import UNKNOWN, Tally, decide

KNOWN = ("app.a", "app.b")
QUEUES = ("default", "low")


def known(name: str) -> bool:
    return name in KNOWN


OUTCOMES = ("done", "failed", "unrunnable", "rescheduled", "timed out")
outcomes = st.tuples(
    st.sampled_from(OUTCOMES),
    st.one_of(st.sampled_from(KNOWN), st.text(max_size=12), st.none(), st.integers()),  # unknown names too
    st.one_of(st.sampled_from(QUEUES), st.text(max_size=5), st.none()),
    st.one_of(st.floats(min_value=0, max_value=5000), st.sampled_from(config.JOB_TIME_BUCKETS)),
)


def _counters_saw(counters: Counters) -> set[tuple[str, bool, int | None]]:
    """(job, failed, bucket) of each run in the per-job rows taken from `counters` (emptied)."""
    seen = set()
    for (_, job), row in counters.take_jobs().items():
        assert row[RUNS] == 1
        buckets = [i for i, n in enumerate(row[HISTOGRAM:ROW]) if n]
        seen.add((job, bool(row[FAILED]), buckets[0] if buckets else None))
    return seen


def _prometheus_saw(metrics: JobMetrics, before: dict) -> set[tuple[str, bool, int | None]]:
    """(job, failed, bucket) of each job added to `metrics` since `before` (its totals then)."""
    seen = set()
    for (job, _), s in metrics.totals.items():
        old = before.get((job, _))
        processed = s.processed - (old.processed if old else 0)
        if processed:
            assert processed == 1
            failed = s.failed - (old.failed if old else 0)
            counts = [a - b for a, b in zip(s.counts, old.counts if old else [0] * len(s.counts), strict=True)]
            buckets = [i for i, n in enumerate(counts) if n]
            seen.add((job, bool(failed), buckets[0] if buckets else None))
    return seen


@settings(max_examples=300, deadline=None)
@given(st.lists(outcomes, min_size=1, max_size=20))
def test_both_sinks_record_the_same_job_failure_and_bucket(generated):
    counters = Counters(known=known)
    metrics = JobMetrics(QUEUES, 1, known=known)
    tally = Tally((counters, metrics), known=known)
    for outcome, name, queue, seconds in generated:
        before = {k: s.copy() for k, s in metrics.totals.items()}
        failed = outcome != "done"
        if outcome == "unrunnable":
            tally.unrunnable({"name": name, "queue": queue})
            expected = {(name if name in KNOWN else UNKNOWN, True, None)}
        else:
            ctx = JobContext({"name": name, "queue": queue, "jid": "j"}, "")
            ctx.exception = {"failed": ValueError("x"), "timed out": JobTimeout("t")}.get(outcome)
            ctx.disposition = {"failed": Disposition.RETRY, "timed out": Disposition.DEAD}.get(outcome, Disposition.ACK)
            if outcome == "rescheduled":
                ctx.exception = OverLimit("one", "concurrent", 1.0)
                ctx.disposition = Disposition.RESCHEDULE
            ctx.started_at = time.time() - seconds
            tally.after_process(ctx)
            expected = set() if outcome == "rescheduled" else {(decide(name, queue, failed, 0, known)[0], failed, 0)}
        in_redis, in_prometheus = _counters_saw(counters), _prometheus_saw(metrics, before)
        assert in_redis == in_prometheus  # the same (job, failed, bucket) in both sinks
        assert {(j, f) for j, f, _ in in_redis} == {(j, f) for j, f, _ in expected}
        ran = outcome not in ("rescheduled", "unrunnable")
        assert all((b is not None) == ran for _, _, b in in_redis)  # a run time only for a job that ran
    assert counters.processed == sum(m.processed for m in metrics.totals.values())
    assert counters.failed == sum(m.failed for m in metrics.totals.values())


def test_a_name_no_registered_job_has_is_unknown_and_run_times_share_the_redis_buckets():
    assert decide("no.such.job", "q", False, 0.3)[0] == UNKNOWN
    assert decide(["not", "a", "name"], None, True, None) == (UNKNOWN, None, True, None, None)
    bounds = config.JOB_TIME_BUCKETS
    assert decide("x", None, False, bounds[0], lambda _: True)[4] == 0  # a bound holds itself (`le`)
    assert decide("x", None, False, bounds[-1] + 1, lambda _: True)[4] == len(bounds)  # past the last: +Inf
    assert decide("x", None, False, -1.0, lambda _: True)[3] == 0.0  # a clock step back is no negative time


def test_a_wrapper_counts_under_the_job_it_ran_when_that_is_loaded_code_else_its_own_name():
    """As Sidekiq keeps an ActiveJob's metrics under its class: a Django task's runs count under its path in the
    per-job metrics in Redis; a `wrapped` naming nothing loaded here (made up) counts under the wrapper, so names
    stay bounded. Prometheus' `job` label stays the wire name (the wrapper's)."""
    loaded = f"{__name__}.known"
    counters = Counters(known=known)
    metrics = JobMetrics(QUEUES, 1, known=known)
    tally = Tally((counters, metrics), known=known)
    runs = [
        ("app.a", loaded, None),  # this module's function: loaded
        ("app.a", loaded, ValueError("x")),
        ("app.a", f"{__name__}.no_such_function", None),
        ("app.a", "no_such_module.task", None),
        ("app.b", 42, None),  # not a name
        ("not.registered", loaded, None),  # an unknown wrapper stays unknown
        ("app.b", None, None),  # no `wrapped`: the plain path
    ]
    for name, wrapped, exc in runs:
        payload = {"name": name, "queue": "default", "jid": "j"}
        if wrapped is not None:
            payload["wrapped"] = wrapped
        ctx = JobContext(payload, "")
        ctx.exception = exc
        ctx.started_at = time.time()
        tally.after_process(ctx)
    rows = {job: (row[RUNS], row[FAILED]) for (_, job), row in counters.take_jobs().items()}
    assert rows == {loaded: (2, 1), "app.a": (2, 0), "app.b": (2, 0), UNKNOWN: (1, 0)}
    assert {job: s.processed for (job, _), s in metrics.totals.items()} == {"app.a": 4, "app.b": 2, UNKNOWN: 1}
