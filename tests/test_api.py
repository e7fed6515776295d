"""jiggler_gevent.api against real state: sizes, latency, iterate, retry, delete, clear."""

import json
import time

from jiggler_gevent import api
from tests import jobs
from tests.conftest import wait_for


def test_queue_size_latency_iterate_delete_clear(ns, r):
    jids = jobs.record.enqueue_bulk([("k", str(i)) for i in range(5)])
    q = api.Queue("default")
    assert len(q) == 5 and q.size == 5
    assert 0 <= q.latency < 5
    raw = r.lindex(ns.keys.queue("default"), -1)
    p = json.loads(raw)
    p["enqueued_at"] = time.time() - 100
    r.lset(ns.keys.queue("default"), -1, json.dumps(p))
    assert 99 < q.latency < 110
    entries = list(q)
    assert [e.jid for e in entries] == jids and entries[1].args == ["k", "1"]
    assert entries[2].delete() and len(q) == 4
    assert [e.jid for e in q.page(0, 2)] == jids[:2]
    assert [q.name for q in api.Queue.all()] == ["default"]
    assert q.clear() == 4 and len(q) == 0 and api.Queue.all() == []


def test_sets_iterate_retry_delete_and_clear(ns, r):
    for i in range(3):
        jobs.record.enqueue_in(3600, "k", str(i))
    s = api.ScheduledSet()
    assert len(s) == 3
    [first, second, third] = list(s)
    assert first.name == "tests.jobs.record" and first.queue == "default" and first.at > time.time()
    assert first.retry() and not first.retry()  # the second time it is no longer there
    assert second.delete() and len(s) == 1
    assert r.llen(ns.keys.queue("default")) == 1
    assert s.find(third.jid).jid == third.jid and s.find("nope") is None
    assert s.clear() == 1 and len(s) == 0


def test_retry_from_the_dead_set_runs_the_job_again(ns, r, start_worker, tkey):
    jobs.always_fail.enqueue(tkey("dead-runs"))
    w = start_worker("-c", "2")
    wait_for(lambda: api.DeadSet().size == 1, 10, "a dead job")
    [entry] = list(api.DeadSet())
    assert entry.error_class == "RuntimeError" and entry.error_message == "this job always fails"
    assert entry.retry()
    wait_for(lambda: r.llen(tkey("dead-runs")) == 2, 10, "the second run")
    wait_for(lambda: api.DeadSet().size == 1, 10, "back in the dead set after failing again")
    assert w.stop() == 0
    assert api.DeadSet().retry_all() == 1 and api.Queue().size == 1
    assert api.Queue().clear() == 1


def test_stats_snapshot(ns, r):
    jobs.record.enqueue("k", "v")
    jobs.on_other_queue.enqueue("k")
    jobs.record.enqueue_in(100, "k", "v")
    r.zadd(ns.keys.retry, {"{}": time.time()})
    r.zadd(ns.keys.dead, {"[]": time.time()})
    s = api.Stats()
    assert (s.processed, s.failed, s.enqueued, s.scheduled_size, s.retry_size, s.dead_size) == (0, 0, 2, 1, 1, 1)
    assert s.queues == {"default": 1, "other": 1} and s.processes == 0 and s.busy == 0
    data = api.stats_dict(s)
    assert data["processed"] == 0 and [q["name"] for q in data["queues"]] == ["default", "other"]


def test_entries_that_are_not_json_can_still_be_listed_and_deleted(ns, r):
    r.zadd(ns.keys.dead, {"garbage{": 1.0})
    [e] = list(api.DeadSet())
    assert e.jid is None and e.error_class == "PayloadError"
    assert e.delete() and len(api.DeadSet()) == 0


def test_periodic_set_lists_the_entries_of_live_workers_and_enqueue_now_pushes_one(ns, r, start_worker, tkey):
    fast = ("-r", "tests.cron_jobs", "--heartbeat-interval", "0.5")  # a record lives 6 s after a SIGKILL
    key = tkey("cron")
    a = start_worker(*fast, env={"JIGGLER_TEST_CRON": "hourly", "JIGGLER_TEST_CRON_KEY": key})
    b = start_worker(*fast, env={"JIGGLER_TEST_CRON": "parked,hourly", "JIGGLER_TEST_CRON_KEY": key})

    def by_name() -> dict:
        return {e.name: e for e in api.PeriodicSet()}

    wait_for(lambda: by_name().get("every-second") and by_name()["every-second"].last_at, 30, "both tables")
    entries, now = by_name(), time.time()
    assert sorted(entries) == ["every-second", "hourly-report"] and len(api.PeriodicSet()) == 2
    hourly, every = entries["hourly-report"], entries["every-second"]
    assert (hourly.cron, hourly.tz, hourly.job, hourly.queue) == (
        "0 * * * *",
        "Europe/Berlin",
        "tests.cron_jobs.report",
        "reports",
    )
    assert hourly.args == [key, "eu"] and hourly.kwargs == {"full": True} and hourly.last_at is None
    assert hourly.next_at % 1800 == 0 and now < hourly.next_at <= now + 3600
    assert (every.cron, every.queue) == ("* * * * * *", "cron-parked") and now < every.next_at <= now + 1
    assert now - 3 < every.last_at <= now and float(r.hget(ns.keys.cron_last, "every-second")) >= every.last_at
    assert every.as_dict() == {
        "name": "every-second",
        "cron": "* * * * * *",
        "tz": "UTC",
        "job": "tests.cron_jobs.tick",
        "queue": "cron-parked",
        "next_at": every.next_at,
        "last_at": every.last_at,
    }
    # two sets of entries, a lease each: the second worker's Scheduler may take its lease after the first has fired
    wait_for(lambda: len(list(r.scan_iter(f"{ns.namespace}:cron:leader:*"))) == 2, 15, "a lease per set of entries")
    jid = hourly.enqueue_now()
    [p] = [json.loads(raw) for raw in r.lrange(ns.keys.queue("reports"), 0, -1)]
    assert p["jid"] == jid and p["name"] == "tests.cron_jobs.report" and p["periodic"] == "hourly-report"
    assert (p["args"], p["kwargs"], p["retries"], p["timeout"]) == ([key, "eu"], {"full": True}, 3, 60.0)
    assert abs(p["fire_at"] - time.time()) < 5 and api.PeriodicSet().get("hourly-report").last_at is None
    assert api.PeriodicSet().get("nope") is None
    b.kill()  # its entry leaves the list when its heartbeat expires
    wait_for(lambda: sorted(by_name()) == ["hourly-report"], 15, "the killed worker's entry to leave")
    assert a.stop() == 0  # a clean stop leaves no entry behind at once
    assert list(api.PeriodicSet()) == []


def test_stats_in_sidekiq_wire_mode_read_sidekiqs_counters_and_sets(ns, r, start_worker, tkey):
    """A worker in `--wire sidekiq` mode fills Sidekiq's own keys (under `NS:` as redis-namespace would put them);
    `gjiggler stats --wire sidekiq` and api.Stats() read those, not jiggler's."""
    from jiggler_gevent import config
    from tests.test_cli_results import gj

    config.configure(wire="sidekiq")
    keys = config.current().keys
    jobs.record.enqueue(tkey("ok"), "v")
    jobs.fail_times.enqueue(tkey("retry"), 5)  # fails, then waits in the retry set (at least 15 s)
    jobs.always_fail.enqueue(tkey("dead"))  # retries=0: to the dead set
    jobs.record.enqueue_in(3600, tkey("later"), "v")
    w = start_worker("--wire", "sidekiq", "-c", "2", "--heartbeat-interval", "0.2")
    # the heartbeat flushes the counts, the Acker writes the dead entry: either may land first
    wait_for(lambda: r.get(keys.stat("processed")) == "3" and r.zcard(keys.dead), 20, "stat:processed at 3, one dead")
    assert keys.stat("processed") == f"{ns.namespace}:stat:processed" and r.zcard(keys.dead) == 1
    # A Ruby Sidekiq process keeps busy, quiet and beat out of its JSON info.
    ruby = "rubyhost:77:abc"
    r.sadd(keys.processes, ruby)
    ruby_info = {"hostname": "rubyhost", "pid": 77, "concurrency": 5, "queues": ["rb"], "identity": ruby}
    r.hset(keys.process(ruby), mapping={"info": json.dumps(ruby_info), "busy": "4", "quiet": "true", "beat": "1.5"})

    out = gj(ns, "stats", "--json", "--wire", "sidekiq")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["processed"], data["failed"]) == (3, 2)
    assert (data["retry_size"], data["dead_size"], data["scheduled_size"]) == (1, 1, 1)
    by_host = {p["hostname"]: p for p in data["processes"]}
    assert len(by_host) == 2 and by_host["rubyhost"]["busy"] == 4 and by_host["rubyhost"]["quiet"] is True
    assert data["busy"] == 4 + by_host[next(h for h in by_host if h != "rubyhost")]["busy"]
    assert "retries 1  dead 1" in gj(ns, "stats", "--wire", "sidekiq").stdout

    s = api.Stats()  # with configure(wire="sidekiq") in this process
    assert (s.processed, s.failed, s.retry_size, s.dead_size, s.processes) == (3, 2, 1, 1, 2)
    assert {p.hostname: p.busy for p in api.ProcessSet()}["rubyhost"] == 4 and len(api.ProcessSet()) == 2
    sidekiq_8 = {"class": "HardJob", "args": [], "jid": "j8", "queue": "rb", "enqueued_at": (time.time() - 100) * 1000}
    r.lpush(keys.queue("rb"), json.dumps(sidekiq_8))  # Sidekiq 8 writes integer milliseconds
    assert 99 < api.Queue("rb").latency < 160
    assert w.stop() == 0


def test_entries_show_the_job_a_wrapper_runs_in_sidekiqs_format_too(ns, r):
    """`wrapped` is a Sidekiq field: a Django task's payload keeps it at the top level in Sidekiq's format (where
    Sidekiq's Web UI reads it), and a Ruby ActiveJob payload shows its job class and that job's arguments."""
    from jiggler_gevent import client, config
    from jiggler_gevent import payload as payload_mod

    keys = config.configure(wire="sidekiq").keys
    spec = {"path": "shop.tasks.send_mail", "priority": 0}
    task = payload_mod.build(payload_mod.DJANGO_TASK, ["rid", spec, ["a@b.c"], {"subject": "hi"}, {}], queue="mail")
    task["wrapped"] = "shop.tasks.send_mail"
    client.current().push(task)
    active_job = {
        "class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
        "wrapped": "InvoiceJob",
        "queue": "mail",
        "jid": "aj1",
        "args": [{"job_class": "InvoiceJob", "arguments": [42, "eur"], "job_id": "x"}],
        "created_at": time.time(),
    }
    r.lpush(keys.queue("mail"), json.dumps(active_job))
    client.current().push(payload_mod.build("tests.jobs.record", ["k", "v"], queue="mail"))

    [stored] = [json.loads(raw) for raw in r.lrange(keys.queue("mail"), 0, -1) if '"rid"' in raw]
    assert stored["wrapped"] == "shop.tasks.send_mail" and "wrapped" not in stored.get("jiggler", {})
    shown = [(e.name, e.display_name, e.display_args, e.display_kwargs) for e in api.Queue("mail")]
    assert shown == [
        (payload_mod.DJANGO_TASK, "shop.tasks.send_mail", ["a@b.c"], {"subject": "hi"}),
        (active_job["class"], "InvoiceJob", [42, "eur"], {}),
        ("tests.jobs.record", "tests.jobs.record", ["k", "v"], {}),  # a plain job: its own name and args
    ]
