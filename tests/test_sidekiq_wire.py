"""Sidekiq wire compatibility (`--wire sidekiq`) against real Ruby Sidekiq 6.4: its client, a `sidekiq` process
and its Web UI (tests/sidekiq_ruby.py). Sidekiq's keys have no namespace, so each test owns a Redis database
(claimed_db: one of 8..15, emptied before and after), never DB 0's namespaces.
"""

import json
import re
import signal
from collections.abc import Iterator

import pytest
import redis

from jiggler_gevent import api, config, sidekiq
from tests import sidekiq_jobs
from tests.conftest import Worker, wait_for
from tests.sidekiq_jobs import FAILED_ONCE, RUNS, STARTED
from tests.sidekiq_ruby import SidekiqProcess, SidekiqWeb, claimed_db, require_ruby_sidekiq, run_ruby

COUNT = "tests.sidekiq_jobs.count"

RUBY_JOBS = """\
class HardJob
  include Sidekiq::Worker
  def perform(a, b)
    Sidekiq.redis { |c| c.rpush("jiggler:t:ruby", "#{a}+#{b}=#{a + b}") }
  end
end

class NapJob
  include Sidekiq::Worker
  def perform(seconds)
    sleep(seconds)
  end
end
"""


class PyWorker(Worker):
    """A `gjiggler worker --wire sidekiq` subprocess on `url` (no namespace: Sidekiq's bare keys)."""

    def __init__(self, url: str, *args: str) -> None:
        fast = ["--heartbeat-interval", "0.5", "--poll-interval", "0.2"]
        self.launch(
            ["-r", "tests.sidekiq_jobs", "--wire", "sidekiq", "--redis-url", url, *fast, *args], "sidekiq-wire-worker"
        )


@pytest.fixture
def db(redis_url: str) -> Iterator[str]:
    """A Redis database of this test's own, configured for pushes from this process."""
    require_ruby_sidekiq()
    with claimed_db(redis_url) as url:
        config.configure(redis_url=url)
        try:
            yield url
        finally:
            config.reset()


@pytest.fixture
def r(db: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(db, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def workers(db: str) -> Iterator[list[PyWorker]]:
    started: list[PyWorker] = []
    yield started
    for w in started:
        w.close()


def start(workers: list[PyWorker], url: str, *args: str) -> PyWorker:
    w = PyWorker(url, *args)
    workers.append(w)
    return w


def identity_of(r: redis.Redis, pid: int) -> str:
    def found() -> str | None:
        return next((i for i in r.smembers("processes") if i.split(":")[1] == str(pid)), None)

    return str(wait_for(found, 30, f"process {pid} in `processes`"))


def ruby_json(url: str, code: str) -> object:
    """Run Ruby `code` whose last line prints JSON; the parsed value."""
    return json.loads(run_ruby(url, 'require "json"\n' + code).strip().splitlines()[-1])


RETRY_ENTRY = """\
e = Sidekiq::{set}.new.find {{ |x| x.klass == {klass!r} }}
puts JSON.dump(e && {{"jid" => e.jid, "error_class" => e["error_class"], "error_message" => e["error_message"],
  "retry_count" => e["retry_count"], "queue" => e.queue, "args" => e.args,
  "created_at" => e.created_at.to_f, "failed_at" => e["failed_at"]}})
"""


def entry_from_ruby(url: str, set_name: str, klass: str) -> dict | None:
    found = ruby_json(url, RETRY_ENTRY.format(set=set_name, klass=klass))
    assert found is None or isinstance(found, dict)
    return found


def test_ruby_push_bulk_runs_each_once_and_failure_shows_in_ruby_retry_set(db: str, r, workers) -> None:
    worker = start(workers, db, "-q", "py", "-c", "20")
    jids = ruby_json(
        db,
        f"""\
jids = Sidekiq::Client.push_bulk("class" => {COUNT!r}, "queue" => "py", "args" => (1..1000).map {{ |i| [i] }})
Sidekiq::Client.push("class" => "tests.sidekiq_jobs.fail", "queue" => "py", "args" => ["boom"])
puts JSON.dump(jids)
""",
    )
    assert isinstance(jids, list) and len(set(jids)) == 1000
    wait_for(lambda: r.hlen(RUNS) >= 1000, 120, "1,000 jobs run", interval=0.2)
    entry = wait_for(lambda: entry_from_ruby(db, "RetrySet", "tests.sidekiq_jobs.fail"), 30, "the failure")
    assert isinstance(entry, dict)
    assert entry["error_class"] == "ValueError" and entry["error_message"] == "boom"
    assert entry["retry_count"] == 0 and entry["queue"] == "py" and entry["args"] == ["boom"]
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.output()
    runs = r.hgetall(RUNS)
    assert set(runs) == set(jids) and set(runs.values()) == {"1"}, "every job ran exactly once"
    assert r.llen("queue:py") == 0 and not r.keys("jiggler:working:*")


def test_python_push_runs_in_a_real_ruby_sidekiq(db: str, r) -> None:
    with SidekiqProcess(db, RUBY_JOBS, queues=("rb",)) as ruby:
        jid = sidekiq.push("HardJob", [2, 3], queue="rb")
        wait_for(lambda: r.lrange("jiggler:t:ruby", 0, -1), 30, "the Ruby job to run")
        assert r.lrange("jiggler:t:ruby", 0, -1) == ["2+3=5"], ruby.log()
        assert len(jid) == 24 and "ERROR" not in ruby.log() and r.zcard("retry") == 0


def test_cancelling_a_job_a_real_ruby_sidekiq_runs_is_refused(db: str, r) -> None:
    config.configure(wire="sidekiq")
    with SidekiqProcess(db, RUBY_JOBS, queues=("rb",)) as ruby:
        jid = sidekiq.push("NapJob", [30], queue="rb")
        wait_for(
            lambda: any(jid in entry for key in r.keys("*:work*") for entry in r.hvals(key)),
            30,
            "the Ruby job in its process's work hash (written with each heartbeat)",
        )
        with pytest.raises(api.CancelRefused, match="Ruby Sidekiq"):
            api.Job(jid).cancel()
        assert r.zcard("jiggler:cancelled") == 0, ruby.log()


def test_web_ui_lists_our_process_retries_its_failure_and_quiets_and_stops_it(db: str, r, workers) -> None:
    worker = start(workers, db, "-q", "py")
    identity = identity_of(r, worker.proc.pid)
    with SidekiqWeb(db) as web:
        napping = sidekiq.push("tests.sidekiq_jobs.nap", [6], queue="py")
        wait_for(lambda: r.hlen(f"{identity}:workers") and r.hlen(f"{identity}:work"), 30, "a job on the beat")
        busy = web.get("/busy")
        assert identity in busy and napping in busy and "tests.sidekiq_jobs.nap" in busy, "the process and its job"
        wait_for(lambda: r.hget(RUNS, napping) == "1", 30, "the job to end")
        jid = sidekiq.push("tests.sidekiq_jobs.fail_once", ["k1"], queue="py")
        wait_for(lambda: r.zcard("retry") == 1, 30, "the first attempt to fail")
        assert r.sismember(FAILED_ONCE, "k1")
        [key] = web.retry_keys()
        assert key.endswith(jid)
        web.retry_now(key)
        wait_for(lambda: r.hget(RUNS, jid) == "1", 30, "the retried job to run in our worker")
        assert r.zcard("retry") == 0 and r.zcard("dead") == 0
        web.quiet(identity)
        wait_for(lambda: r.hget(identity, "quiet") == "true", 30, "our worker to say it is quiet")
        assert "quiet: no new jobs will be fetched" in worker.output()
        web.stop(identity)
        assert worker.proc.wait(30) == 0, worker.output()
        assert identity not in r.smembers("processes")


def test_mixed_fleet_each_side_runs_its_own_queue(db: str, r, workers) -> None:
    with SidekiqProcess(db, RUBY_JOBS, queues=("rb",)) as ruby:
        start(workers, db, "-q", "py")
        jids = ruby_json(
            db,
            f"""\
a = Sidekiq::Client.push("class" => "HardJob", "queue" => "rb", "args" => [1, 1])
b = Sidekiq::Client.push("class" => {COUNT!r}, "queue" => "py", "args" => [1])
puts JSON.dump([a, b])
""",
        )
        assert isinstance(jids, list)
        mine = sidekiq.push(COUNT, [2], queue="py")
        sidekiq.push("HardJob", [2, 2], queue="rb")
        wait_for(lambda: r.hlen(RUNS) == 2 and r.llen("jiggler:t:ruby") == 2, 30, "both sides' jobs")
        assert set(r.hkeys(RUNS)) == {jids[1], mine}
        assert sorted(r.lrange("jiggler:t:ruby", 0, -1)) == ["1+1=2", "2+2=4"], ruby.log()
        assert r.zcard("retry") == 0 and r.zcard("dead") == 0


def test_unknown_class_goes_to_the_dead_set_and_the_worker_lives_on(db: str, r, workers) -> None:
    worker = start(workers, db, "-q", "py")
    run_ruby(db, 'Sidekiq::Client.push("class" => "NoSuchJob", "queue" => "py", "args" => [1])')
    entry = wait_for(lambda: entry_from_ruby(db, "DeadSet", "NoSuchJob"), 30, "the unknown job in the dead set")
    assert isinstance(entry, dict)
    assert entry["error_class"] == "PayloadError" and "no job named 'NoSuchJob'" in entry["error_message"]
    assert entry["args"] == [1] and entry["queue"] == "py"
    with SidekiqWeb(db) as web:
        [key] = re.findall(r"href=\"[^\"]*/morgue/([0-9.e+-]+-[0-9a-f]+)\"", web.get("/morgue"))
        assert key.endswith(entry["jid"])
        web.post_form(f"/morgue/{key}", f"/morgue/{key}", {"delete": "Delete"})
        assert r.zcard("dead") == 0, "the Web UI's Delete removed our dead entry"
    jid = sidekiq.push(COUNT, [1], queue="py")
    wait_for(lambda: r.hget(RUNS, jid) == "1", 30, "a job after the unknown one")
    assert worker.proc.poll() is None


def test_both_timestamp_formats_are_read(db: str, r, workers) -> None:
    now = 1_796_000_000.25
    seconds_job = {"class": COUNT, "args": [1], "queue": "py", "jid": "a" * 24, "retry": True}
    seconds_job |= {"created_at": now, "enqueued_at": now}
    ms_job = {"class": "tests.sidekiq_jobs.fail", "args": ["ms"], "queue": "py", "jid": "b" * 24, "retry": 3}
    ms_job |= {"created_at": int(now * 1000), "enqueued_at": int(now * 1000)}
    r.lpush("queue:py", json.dumps(seconds_job), json.dumps(ms_job))
    start(workers, db, "-q", "py")
    wait_for(lambda: r.hget(RUNS, "a" * 24) == "1", 30, "the float-seconds job")
    entry = wait_for(lambda: entry_from_ruby(db, "RetrySet", "tests.sidekiq_jobs.fail"), 30, "the ms job's failure")
    assert isinstance(entry, dict) and entry["jid"] == "b" * 24
    assert entry["created_at"] == pytest.approx(now, abs=0.01), "read as milliseconds, written as seconds"
    [raw] = r.zrange("retry", 0, -1)
    assert json.loads(raw)["retry"] == 3 and isinstance(json.loads(raw)["created_at"], float)


def test_jobs_of_a_sigkilled_worker_are_recovered(db: str, r, workers) -> None:
    first = start(workers, db, "-q", "py")
    jid = sidekiq.push("tests.sidekiq_jobs.nap", [3], queue="py")
    wait_for(lambda: r.lrange(STARTED, 0, -1) == [jid], 30, "the job to start")
    first.proc.kill()
    first.proc.wait(10)
    start(workers, db, "-q", "py")
    wait_for(lambda: r.hget(RUNS, jid) == "1", 60, "the job to run again in the second worker")
    assert r.lrange(STARTED, 0, -1) == [jid, jid]


def test_a_timed_out_job_is_retried_with_its_error(db: str, r, workers) -> None:
    start(workers, db, "-q", "py")
    sidekiq.push("tests.sidekiq_jobs.overrun", [30], queue="py")
    entry = wait_for(lambda: entry_from_ruby(db, "RetrySet", "tests.sidekiq_jobs.overrun"), 30, "the timeout")
    assert isinstance(entry, dict) and entry["error_class"] == "JobTimeout"
    assert "timeout of 1" in entry["error_message"]
    assert not r.hexists(RUNS, entry["jid"])


def test_wire_is_checked_and_selects_sidekiqs_keys() -> None:
    with pytest.raises(ValueError, match="wire must be one of jiggler, sidekiq"):
        config.configure(wire="resque")
    try:
        keys = config.configure(wire="sidekiq").keys
        assert (keys.queue("py"), keys.retry, keys.process("h:1:a"), keys.working("h:1:a")) == (
            "queue:py",
            "retry",
            "h:1:a",
            "jiggler:working:h:1:a",
        )
        assert config.configure(namespace="app").keys.queue("py") == "app:queue:py"
    finally:
        config.reset()


def test_a_cpu_hog_pushed_from_ruby_is_preempted_and_the_heartbeat_goes_on(db: str, r, workers) -> None:
    w = start(workers, db, "-q", "py", "-c", "5")
    identity = identity_of(r, w.proc.pid)
    run_ruby(db, 'Sidekiq::Client.push("class" => "tests.sidekiq_jobs.burn", "args" => [4], "queue" => "py")\n')
    wait_for(lambda: r.hlen(f"{identity}:workers") == 1, 30, "the hog running, as Sidekiq's Busy page shows")
    beats = set()
    while r.hlen(f"{identity}:workers") == 1:  # a cooperative loop's beats while the hog holds the CPU
        beats.add(r.hget(identity, "beat"))
        assert len(beats) < 1000
        wait_for(lambda: r.hget(identity, "beat") not in beats or not r.hlen(f"{identity}:workers"), 10, "a beat")
    assert len(beats) >= 4, f"only {len(beats)} distinct heartbeats during a 4 s hog at a 0.5 s interval"
    assert list(r.hvals(RUNS)) == ["1"]
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    assert re.search(r"switcher stopped: [1-9]\d* forced yield", w.output()), w.output()[-2000:]


def test_two_processes_show_on_sidekiqs_busy_page_and_share_the_queue(db: str, r, workers) -> None:
    w = start(workers, db, "-q", "py", "-p", "2")
    wait_for(lambda: len([i for i in r.smembers("processes") if r.hexists(i, "info")]) == 2, 30, "two children")
    with SidekiqWeb(db) as web:
        busy = web.get("/busy")
        children = [i for i in r.smembers("processes") if r.hexists(i, "info")]
        assert all(i in busy for i in children), busy[:2000]
    push = 'Sidekiq::Client.push_bulk("class" => "tests.sidekiq_jobs.count", "args" => (1..200).map { |i| [i] }, '
    run_ruby(db, push + '"queue" => "py")\n')
    wait_for(lambda: r.hlen(RUNS) == 200, 60, "200 jobs run")
    assert set(r.hvals(RUNS)) == {"1"}
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    assert [i for i in r.smembers("processes") if r.exists(i)] == []


def test_a_concurrency_job_pushed_by_ruby_is_limited_by_the_fetch(db: str, r, workers) -> None:
    """Sidekiq's payloads carry nothing of `concurrency=2`: the worker names its limited jobs (by Sidekiq's `class`)
    in each fetch, which takes their slots, so two Python processes never run more than two at once."""
    jids = ruby_json(
        db,
        """\
jids = Sidekiq::Client.push_bulk("class" => "tests.sidekiq_jobs.two_at_a_time", "queue" => "py",
  "args" => (1..30).map { [0.05] })
puts JSON.dump(jids)
""",
    )
    assert isinstance(jids, list) and len(jids) == 30
    for _ in range(2):
        start(workers, db, "-q", "py", "-c", "5")
    wait_for(lambda: r.hlen(RUNS) == 30, 60, "30 runs", interval=0.1)
    assert r.get(sidekiq_jobs.TWO_MOST) == "2"
    keys = config.configure(redis_url=db, wire="sidekiq").keys
    limiter = keys.limit(sidekiq_jobs.two_at_a_time.name)
    wait_for(lambda: r.zcard(limiter) == 0, 10, "every slot given back")
    assert set(r.hgetall(RUNS).values()) == {"1"}
