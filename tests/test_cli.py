"""`gjiggler` as a user runs it: --version, bad options, enqueue, stats, set actions."""

import json
import subprocess
import sys

import pytest

from jiggler_gevent import __version__, api
from tests.conftest import ROOT


def gj(*args, ns=None):
    extra = ["--redis-url", ns.url, "--namespace", ns.namespace] if ns is not None else []
    return subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", *args, *extra], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_version_and_help():
    out = gj("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    for command in (
        "worker",
        "stats",
        "enqueue",
        "retry-dead",
        "retry-retries",
        "clear-dead",
        "clear-retries",
        "clear-scheduled",
        "web",
        "demo",
        "cron",
        "limits",
    ):
        out = gj(command, "--help")
        assert out.returncode == 0 and "--redis-url" in out.stdout and "--namespace" in out.stdout, command


@pytest.mark.parametrize(
    "args, word",
    [
        (["worker", "-c", "0"], "concurrency"),
        (["worker", "-c", "many"], "concurrency"),
        (["worker", "-q", "a,x"], "weight"),
        (["worker", "-q", "a,0"], "weight"),
        (["worker", "-t", "-1"], "timeout"),
        (["worker", "-t", "nan"], "timeout"),
        (["worker", "--poll-interval", "NaN"], "poll-interval"),
        (["worker", "--preempt", "-0.5"], "preempt"),
        (["worker", "-p", "0"], "processes"),
        (["worker", "-r", "no_such_module_here"], "no_such_module_here"),
        (["worker", "--bogus"], "bogus"),
        (["nonsense"], "nonsense"),
        (["stats", "--namespace", "a:b"], "namespace"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(args, word):
    out = gj(*args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gjiggler: error:") and word in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_a_worker_without_a_job_module_is_a_usage_error(ns, r):
    out = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "worker", "--redis-url", ns.url, "--namespace", ns.namespace],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,  # it used to start and run until stopped
    )
    assert out.returncode == 2, out
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("gjiggler: error:") and "-r MODULE" in line, line
    assert r.smembers(ns.keys.processes) == set()  # it never started


def test_enqueue_parses_json_args_and_falls_back_to_strings(ns, r):
    out = gj("enqueue", "tests.jobs.record", "key", '{"a": [1, 2]}', "3", "not json {", "-q", "low", ns=ns)
    assert out.returncode == 0, out.stderr
    jid = out.stdout.strip()
    [raw] = r.lrange(ns.keys.queue("low"), 0, -1)
    p = json.loads(raw)
    assert p["jid"] == jid and p["name"] == "tests.jobs.record"
    assert p["args"] == ["key", {"a": [1, 2]}, 3, "not json {"]


def test_enqueue_does_not_check_the_name(ns, r):
    out = gj("enqueue", "no.such.job", ns=ns)
    assert out.returncode == 0 and r.llen(ns.keys.queue("default")) == 1


def test_enqueue_without_r_says_the_jobs_options_were_not_applied(ns, r):
    out = gj("enqueue", "tests.jobs.report", "k", ns=ns)
    assert out.returncode == 0, out.stderr
    [p] = [json.loads(raw) for raw in r.lrange(ns.keys.queue("default"), 0, -1)]
    assert p["jid"] == out.stdout.strip() and (p["queue"], p["retries"]) == ("default", 25)
    [line] = out.stderr.strip().splitlines()
    assert "not applied" in line and "-r" in line


def test_enqueue_with_r_applies_the_jobs_own_options(ns, r):
    out = gj("enqueue", "tests.jobs.report", "k", "-r", "tests.jobs", ns=ns)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    [raw] = r.lrange(ns.keys.queue("reports"), 0, -1)
    p = json.loads(raw)
    assert p["jid"] == out.stdout.strip() and p["name"] == "tests.jobs.report" and p["args"] == ["k"]
    assert (p["retries"], p["timeout"], p["dead"], p["result_ttl"], p["unique_for"]) == (1, 12.5, False, 60, 30)
    assert api.Job(p["jid"]).info()["status"] == "queued"  # result_ttl: its status is kept
    again = gj("enqueue", "tests.jobs.report", "k", "-r", "tests.jobs", ns=ns)  # unique_for: a duplicate
    assert again.returncode == 0 and again.stdout == "" and "unique" in again.stderr
    other = gj("enqueue", "tests.jobs.report", "k2", '"v"', "-q", "low", "-r", "tests.jobs", ns=ns)
    assert other.returncode == 0, other.stderr
    [low] = [json.loads(raw) for raw in r.lrange(ns.keys.queue("low"), 0, -1)]
    assert (low["args"], low["queue"], low["retries"], low["timeout"]) == (["k2", "v"], "low", 1, 12.5)


@pytest.mark.parametrize(
    "args, word",
    [
        (["tests.jobs.report"], "missing a required argument: 'key'"),
        (["tests.jobs.report", "a", "b", "c"], "too many positional arguments"),
        (["tests.jobs.no_such_job", "a"], "no job named 'tests.jobs.no_such_job' is registered in tests.jobs"),
        (["tests.jobs.report", "a", "-r", "tests.no_such_module"], "tests.no_such_module"),
    ],
)
def test_enqueue_with_r_refuses_what_cannot_run_and_pushes_nothing(ns, r, args, word):
    out = gj("enqueue", *args, "-r", "tests.jobs", ns=ns)
    assert out.returncode == 2, out
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("gjiggler: error:") and word in line, line
    assert list(r.scan_iter(f"{ns.namespace}:*")) == []


@pytest.mark.parametrize("registered", [[], ["-r", "tests.jobs"]], ids=["by-name", "with-r"])
def test_enqueue_with_a_priority_or_a_group_places_the_job_as_the_option_does(ns, r, registered):
    high = gj("enqueue", "tests.jobs.record", "k", "v", "--priority", "7", *registered, ns=ns)
    grouped = gj("enqueue", "tests.jobs.record", "k", "v", "--group", "tenant-4", *registered, ns=ns)
    assert high.returncode == 0 and grouped.returncode == 0, (high.stderr, grouped.stderr)
    assert api.Queue("default").size == 2 and api.Queue("default").groups() == {"tenant-4": 1}
    [first] = api.Queue("default").page(0, 1)  # priority jobs are listed first
    assert (first.jid, first.priority) == (high.stdout.strip(), 7)
    for bad, word in ((["--priority", "101"], "priority"), (["--priority", "3", "--group", "g"], "group")):
        out = gj("enqueue", "tests.jobs.record", "k", "v", *bad, *registered, ns=ns)
        assert out.returncode == 2, out
        [line] = out.stderr.strip().splitlines()
        assert line.startswith("gjiggler: error:") and word in line, line
    assert api.Queue("default").size == 2  # nothing more pushed


def test_stats_json_and_text(ns, r):
    r.incrby(ns.keys.stat("processed"), 7)
    gj("enqueue", "x.y", "1", ns=ns)
    out = gj("stats", "--json", ns=ns)
    data = json.loads(out.stdout)
    assert isinstance(data["processed"], int) and data["processed"] == 7 and data["failed"] == 0
    assert data["enqueued"] == 1 and data["queues"][0]["name"] == "default"
    text = gj("stats", ns=ns).stdout
    assert "processed 7" in text and "queue default: 1 job(s)" in text


def test_stats_never_shows_the_password(ns):
    url = ns.url.replace("redis://", "redis://user:s3cr3t-pw@")
    out = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "stats", "--redis-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "s3cr3t-pw" not in out.stdout + out.stderr


def test_retry_and_clear_the_dead_set(ns, r):
    r.zadd(
        ns.keys.dead,
        {
            json.dumps({"jid": "a", "name": "x.y", "args": [], "queue": "default"}): 1,
            json.dumps({"jid": "b", "name": "x.y", "args": [], "queue": "default"}): 2,
        },
    )
    out = gj("retry-dead", ns=ns)
    assert out.returncode == 0 and "retried 2" in out.stdout
    assert api.Queue().size == 2 and api.DeadSet().size == 0
    r.zadd(ns.keys.retry, {"{}": 1})
    assert "cleared 1" in gj("clear-retries", ns=ns).stdout and api.RetrySet().size == 0


def test_retry_the_retry_set_and_clear_the_scheduled_set(ns, r):
    r.zadd(ns.keys.retry, {json.dumps({"jid": "a", "name": "x.y", "args": [], "queue": "low"}): 1})
    r.zadd(ns.keys.schedule, {json.dumps({"jid": "b", "name": "x.y", "args": [], "queue": "low"}): 2})
    assert "retried 1" in gj("retry-retries", ns=ns).stdout
    assert api.Queue("low").size == 1 and api.RetrySet().size == 0
    assert "cleared 1" in gj("clear-scheduled", ns=ns).stdout and api.ScheduledSet().size == 0


def test_cron_lists_the_published_entries(ns, r, start_worker, tkey):
    from tests.conftest import wait_for

    assert gj("cron", ns=ns).stdout.startswith("no periodic entries")
    assert json.loads(gj("cron", "--json", ns=ns).stdout) == []
    env = {"JIGGLER_TEST_CRON": "parked,hourly", "JIGGLER_TEST_CRON_KEY": tkey("cron")}
    w = start_worker("-r", "tests.cron_jobs", "--heartbeat-interval", "0.5", env=env)
    wait_for(lambda: r.hget(ns.keys.cron_last, "every-second"), 30, "the first fire time")
    out = gj("cron", "--json", ns=ns)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [row["name"] for row in rows] == ["every-second", "hourly-report"]
    assert all(list(row) == ["name", "cron", "tz", "job", "queue", "next_at", "last_at"] for row in rows)
    assert rows[0]["last_at"] >= float(r.hget(ns.keys.cron_last, "every-second")) - 2 and rows[1]["last_at"] is None
    assert rows[1]["tz"] == "Europe/Berlin" and rows[1]["queue"] == "reports" and rows[1]["next_at"] % 1800 == 0
    text = gj("cron", ns=ns).stdout
    assert "hourly-report: '0 * * * *' Europe/Berlin -> tests.cron_jobs.report on reports; next 20" in text
    assert "last never" in text and "every-second: '* * * * * *' UTC" in text
    assert w.stop() == 0


def test_limits_lists_the_limiters(ns):
    from jiggler_gevent import limits

    assert gj("limits", ns=ns).stdout.startswith("no limiters")
    limits.window("api", 10, per=60).acquire()
    assert json.loads(gj("limits", "--json", ns=ns).stdout) == [
        {"name": "api", "kind": "window", "size": 10, "per": 60.0, "in_use": 1}
    ]
    assert gj("limits", ns=ns).stdout.strip() == "api: window 1/10 per 60s"
