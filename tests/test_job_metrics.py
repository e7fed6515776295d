"""Per-job metrics (NS:metrics:<minute>): a real worker (`-r tests.metric_jobs`) runs known jobs and its heartbeat
writes exactly what ran; made-up job names share one "unknown" entry; a beat that fails keeps the counts for the
next; api.Metrics reads them back, with percentiles estimated from the histogram; `gjiggler metrics` prints them."""

import json
import time

import pytest
import redis

from jiggler_gevent import api, config, payload
from jiggler_gevent.admin.metrics import estimate
from jiggler_gevent.server.heartbeat import Heartbeat, HeartbeatOptions
from jiggler_gevent.server.job_metrics import ROW, Counters
from jiggler_gevent.server.job_metrics_flush import JobMetricsFlush
from jiggler_gevent.server.stats import StatsFlush
from tests import metric_jobs
from tests.conftest import wait_for
from tests.test_cli_results import gj

H500 = 3 + config.JOB_TIME_BUCKETS.index(0.5)  # the row index of runs that took 0.25 s to 0.5 s


def beater(client, keys, counters: Counters) -> Heartbeat:
    """A heartbeat that writes what `counters` tallied (the counts and the per-job metrics), as a worker's does."""
    parts = [StatsFlush(keys, counters), JobMetricsFlush(keys, counters)]
    return Heartbeat(client, keys, "host:1:abc", HeartbeatOptions(interval=1), parts)


def metric_keys(r: redis.Redis, ns: config.Config) -> list[str]:
    return sorted(r.scan_iter(ns.keys.metrics(0)[:-1] + "*"))


def max_field(r: redis.Redis, ns: config.Config, field: str) -> int:
    """The largest value of `field` over the namespace's minutes (0 when absent)."""
    return max((int(r.hget(key, field) or 0) for key in metric_keys(r, ns)), default=0)


def job_totals(r: redis.Redis, ns: config.Config) -> dict[str, int]:
    """Every per-job field of the namespace, added up over the minutes."""
    out: dict[str, int] = {}
    for key in metric_keys(r, ns):
        for field, value in r.hgetall(key).items():
            out[field] = out.get(field, 0) + int(value)
    return out


def test_a_worker_writes_what_ran_with_its_heartbeat(ns, r, start_worker, tkey):
    metric_jobs.quick.enqueue_bulk([(tkey("quick"),)] * 30)
    metric_jobs.broken.enqueue_bulk([(tkey("broken"),)] * 5)
    # 0.6 s: in the bucket (0.5 s, 1 s], with 0.4 s to spare for a loaded machine (0.3 s in (0.25 s, 0.5 s] had 0.2 s)
    metric_jobs.sleepy.enqueue_bulk([(tkey("sleepy"), 0.6)] * 3)
    w = start_worker("-r", "tests.metric_jobs", "-c", "10", "--heartbeat-interval", "0.2")
    quick, broken, sleepy = (f"tests.metric_jobs.{n}" for n in ("quick", "broken", "sleepy"))
    # Written by the running worker's beats, not only at its stop.
    wait_for(lambda: job_totals(r, ns).get(f"{sleepy}|runs") == 3, 20, "the sleepy runs in the metrics")
    wait_for(lambda: job_totals(r, ns).get(f"{quick}|runs") == 30, 10, "the quick runs in the metrics")
    wait_for(lambda: job_totals(r, ns).get(f"{broken}|runs") == 5, 10, "the broken runs in the metrics")
    assert w.proc.poll() is None
    assert w.stop() == 0
    totals = job_totals(r, ns)
    assert totals[f"{quick}|runs"] == 30 and f"{quick}|failed" not in totals
    assert totals[f"{broken}|runs"] == 5 and totals[f"{broken}|failed"] == 5
    assert totals[f"{sleepy}|runs"] == 3 and f"{sleepy}|failed" not in totals
    assert totals[f"{sleepy}|h1000"] == 3  # 0.6 s: in the bucket (0.5 s, 1 s]
    assert not {f for f in totals if f.startswith(f"{sleepy}|h") and f != f"{sleepy}|h1000"}
    assert 600_000 <= max_field(r, ns, f"{sleepy}|max_us") < 1_000_000  # its slowest run, in microseconds
    assert 1800 <= totals[f"{sleepy}|ms"] < 3000
    for name, runs in ((quick, 30), (broken, 5)):
        assert sum(n for f, n in totals.items() if f.startswith(f"{name}|h")) == runs
    assert {f.split("|")[0] for f in totals} == {quick, broken, sleepy}
    for key in metric_keys(r, ns):
        minute = int(key.rsplit(":", 1)[1])
        assert abs(r.expiretime(key) - (minute * 60 + config.JOB_METRICS_TTL)) <= 1
        assert 0 < r.ttl(key) <= config.JOB_METRICS_TTL

    m = api.Metrics(10)
    assert [j.name for j in m.jobs][0] == sleepy  # most total time first
    s = m.job(sleepy)
    assert s is not None and (s.runs, s.failures, s.timed) == (3, 0, 3)
    assert 0.5 < s.p50 <= 1 and 0.5 < s.p95 <= 1 and 0.6 <= s.average < 1
    assert 0.6 <= s.longest < 1 and s.p50 <= s.longest and s.p95 <= s.longest  # not 0.75 and 0.975 (the bucket)
    b = m.job(broken)
    assert b is not None and (b.runs, b.failures) == (5, 5)
    assert sum(x.runs for x in m.series()) == 38 and sum(x.failures for x in m.series(broken)) == 5


def test_made_up_job_names_share_one_unknown_entry(ns, r, start_worker):
    made_up = [payload.encode(payload.build(f"no.such.job_{i}", [i])) for i in range(300)]
    r.lpush(ns.keys.queue("default"), *made_up)
    w = start_worker("-r", "tests.metric_jobs", "-c", "10", "--heartbeat-interval", "0.2")
    wait_for(lambda: r.zcard(ns.keys.dead) == 300, 20, "300 unrunnable payloads buried")
    wait_for(lambda: job_totals(r, ns).get("unknown|runs") == 300, 10, "300 unknown runs in the metrics")
    assert w.stop() == 0
    assert job_totals(r, ns) == {"unknown|runs": 300, "unknown|failed": 300}  # no run time: they never ran
    for key in metric_keys(r, ns):
        assert set(r.hkeys(key)) <= {"unknown|runs", "unknown|failed"}


def test_a_failed_beat_keeps_the_counts_for_the_next(ns, r):
    counters = Counters(known=lambda name: name.startswith("job."))
    for seconds, failed in ((0.003, False), (0.3, False), (0.3, True), (40.0, False), (4000.0, False)):
        counters.record("job.a", seconds, failed)
    counters.record("made.up", 0.001, False)
    counters.record(None, 0.001, True)
    counters.count(False)
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    monitor = beater(dead, ns.keys, counters)
    assert monitor.beat() is False
    assert counters.processed == 1 and counters.jobs  # given back
    counters.record("job.a", 0.02, False)
    monitor.redis = r
    assert monitor.beat() is True
    assert counters.jobs == {} and counters.processed == 0
    assert job_totals(r, ns) == {
        "job.a|runs": 6,
        "job.a|failed": 1,
        "job.a|ms": 3 + 300 + 300 + 40_000 + 4_000_000 + 20,
        "job.a|h5": 1,
        "job.a|h25": 1,
        "job.a|h500": 2,
        "job.a|h60000": 1,
        "job.a|hinf": 1,
        "job.a|max_us": 4000 * 1_000_000,
        "unknown|runs": 2,
        "unknown|failed": 1,
        "unknown|ms": 2,
        "unknown|h5": 2,
        "unknown|max_us": 1000,
    }
    # A tally kept through an outage longer than the metrics live is dropped, not written into expired minutes.
    counters.give_back_jobs({(int(time.time() // 60) - 9 * 60, "job.a"): [1] * ROW})
    assert counters.jobs == {}


def test_the_longest_run_per_minute_bounds_the_percentiles(ns, r):
    counters = Counters(known=lambda name: True)
    monitor = beater(r, ns.keys, counters)
    for seconds in (0.3, 0.26):
        counters.record("job.b", seconds, False)
    assert monitor.beat() is True
    counters.record("job.b", 0.27, False)  # a later beat (or another worker) with a shorter longest run
    assert monitor.beat() is True
    assert max_field(r, ns, "job.b|max_us") == 300_000  # a maximum, not a sum, nor the last one written
    s = api.Metrics(10).job("job.b")
    assert s is not None and s.runs == 3 and s.longest == pytest.approx(0.3)
    assert estimate(s.histogram, 0.95) > 0.45  # the estimate inside the (0.25 s, 0.5 s] bucket alone
    assert s.p95 == pytest.approx(0.3) and s.p50 <= 0.3
    data = json.loads(gj(ns, "metrics", "--json", "--job", "job.b", "--minutes", "10").stdout)
    assert data["jobs"][0]["p95"] == pytest.approx(0.3) and data["jobs"][0]["longest"] == pytest.approx(0.3)
    assert all(p is None or p <= 0.3 for p in data["p95"])  # per minute too
    counters.record("job.b", 0.45, False)
    assert monitor.beat() is True
    assert api.Metrics(10).job("job.b").longest == pytest.approx(0.45)


def test_estimates_and_the_reading_window(ns, r):
    buckets = [0] * (len(config.JOB_TIME_BUCKETS) + 1)
    assert estimate(buckets, 0.5) is None
    buckets[config.JOB_TIME_BUCKETS.index(1)] = 10  # ten runs in (0.5 s, 1 s]
    assert estimate(buckets, 0.5) == pytest.approx(0.75) and estimate(buckets, 1.0) == pytest.approx(1.0)
    buckets[-1] = 90  # and ninety beyond the last bound: it is the estimate
    assert estimate(buckets, 0.95) == config.JOB_TIME_BUCKETS[-1]

    now = time.time()
    minute = int(now // 60)
    r.hset(ns.keys.metrics(minute), mapping={"a|runs": 2, "a|ms": 30, "a|h25": 2, "odd": 1, "a|weird": 5})
    r.hset(ns.keys.metrics(minute - 5), mapping={"a|runs": 1, "a|failed": 1, "b|x|runs": 4})
    r.hset(ns.keys.metrics(minute - 60), mapping={"a|runs": 100})  # outside the last 60 minutes
    m = api.Metrics(60, now=now)
    assert len(m.minutes) == 60 and m.minutes[-1] == minute * 60 and m.minutes[0] == (minute - 59) * 60
    assert {j.name: (j.runs, j.failures) for j in m} == {"a": (3, 1), "b|x": (4, 0)}
    assert [s.runs for s in m.series("a")][-6:] == [1, 0, 0, 0, 0, 2]
    data = m.as_dict("a")
    assert data["runs"][-1] == 2 and data["failures"][-6] == 1 and len(data["p50"]) == 60
    assert data["histogram"][2] == {"le": 0.025, "count": 2} and data["histogram"][-1] == {"le": None, "count": 0}
    [row] = data["jobs"]
    assert (row["name"], row["runs"], row["failures"]) == ("a", 3, 1)
    assert (row["total"], row["average"]) == pytest.approx((0.03, 0.015))
    assert (row["p50"], row["p95"]) == pytest.approx((0.0175, 0.02425))  # inside (10 ms, 25 ms], linearly
    assert len(api.Metrics(10_000, now=now).minutes) == config.JOB_METRICS_TTL // 60
    assert api.Metrics(61, now=now).job("a").runs == 103


def test_gjiggler_metrics(ns, r):
    assert gj(ns, "metrics").stdout.startswith("no runs in the last 60 min")
    minute = int(time.time() // 60)
    r.hset(ns.keys.metrics(minute), mapping={"j.x|runs": 4, "j.x|failed": 1, "j.x|ms": 1200, "j.x|h500": 4})
    out = gj(ns, "metrics")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "j.x: 4 runs, 1 failed, 1.200s total, p50 0.375s, p95 0.487s"
    detail = gj(ns, "metrics", "--job", "j.x", "--minutes", "5").stdout.splitlines()
    assert detail[1:] == ["  <= 0.5s: 4"]
    data = json.loads(gj(ns, "metrics", "--json", "--job", "j.x").stdout)
    # Read by the minute written, not as the last one: the calls above may have crossed into the next minute.
    written = data["minutes"].index(minute * 60)
    assert data["runs"][written] == 4 and sum(data["runs"]) == 4
    assert data["jobs"][0]["runs"] == 4 and data["histogram"][6]["count"] == 4
    bad = gj(ns, "metrics", "--minutes", "481")
    assert bad.returncode == 2 and "481" in bad.stderr
    assert "--redis-url" in gj(ns, "metrics", "--help").stdout
