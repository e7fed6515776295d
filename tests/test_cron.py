"""The periodic scheduler: in-process on the real Redis with an injected clock (daylight-saving nights, the lease,
the fire script's refusals, catch-up and skips), then real worker processes (three of them with the holder
SIGKILLed, CPU-burning jobs beside a per-second entry, a job reading its fire time, a Redis outage)."""

import datetime as dt
import json
import logging
import os
import signal
import statistics
import time
from zoneinfo import ZoneInfo

import pytest

from jiggler_gevent import api, config, periodic, scripts
from jiggler_gevent.periodic import clear as clear_entries
from jiggler_gevent.server.cron import Scheduler, Table
from tests import jobs
from tests.conftest import wait_for

BERLIN = ZoneInfo("Europe/Berlin")
PARKED = "cron-parked"
FAST = ("-r", "tests.cron_jobs", "--heartbeat-interval", "0.5")  # lease 1 s


@pytest.fixture(autouse=True)
def no_entries_left():
    clear_entries()
    yield
    clear_entries()


class Clock:
    """An injectable clock: the scheduler reads `now`, the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheduler(r, ns, entries, identity="test:1:aa", clock=time.time, heartbeat=5.0) -> Scheduler:
    return Scheduler(r, ns.keys, identity, entries, scripts.register(r), heartbeat, clock)


def parked(r, ns) -> list[dict]:
    """The payloads the scheduler pushed to the parked queue, oldest first."""
    return [json.loads(raw) for raw in reversed(r.lrange(ns.keys.queue(PARKED), 0, -1))]


def run_clock(s: Scheduler, clock: Clock, until: float) -> None:
    """Move the clock from fire time to fire time, as the scheduler's sleep would, and fire each."""
    while True:
        clock.now = min(s.next_at.values())
        if clock.now > until:
            return
        s.fire_due(clock.now)


def local(times, tz=BERLIN) -> list[str]:
    return [dt.datetime.fromtimestamp(t, tz).strftime("%d %H:%M %z") for t in times]


@pytest.mark.parametrize(
    "night, daily, half_hourly",
    [
        (
            (2026, 3, 29),  # spring forward: 02:00 CET -> 03:00 CEST
            ["29 03:00 +0200"],
            ["29 01:00 +0100", "29 01:30 +0100", "29 03:00 +0200", "29 03:30 +0200", "29 04:00 +0200"],
        ),
        (
            (2026, 10, 25),  # fall back: 03:00 CEST -> 02:00 CET
            ["25 02:30 +0200"],
            ["25 01:00 +0200", "25 01:30 +0200", "25 02:00 +0200", "25 02:30 +0200", "25 02:00 +0100"]
            + ["25 02:30 +0100", "25 03:00 +0100", "25 03:30 +0100", "25 04:00 +0100"],
        ),
    ],
)
def test_daylight_saving_nights_through_an_injected_clock(ns, r, night, daily, half_hourly):
    """A 02:30 daily entry fires once on both nights (at 03:00 CEST when 02:30 does not exist); an entry every
    30 minutes skips the missing hour and fires in both passes of the repeated one."""
    entries = [
        periodic("30 2 * * *", jobs.record, args=("k", "daily"), name="daily", queue=PARKED, tz="Europe/Berlin"),
        periodic("*/30 * * * *", jobs.record, args=("k", "half"), name="half", queue=PARKED, tz="Europe/Berlin"),
    ]
    clock = Clock(dt.datetime(*night, 0, 45, tzinfo=BERLIN).timestamp())
    s = scheduler(r, ns, entries, clock=clock)
    s.step()
    assert s.leader
    run_clock(s, clock, dt.datetime(*night, 4, 10, tzinfo=BERLIN, fold=1).timestamp())
    pushed = parked(r, ns)
    assert local(p["fire_at"] for p in pushed if p["periodic"] == "daily") == daily
    assert local(p["fire_at"] for p in pushed if p["periodic"] == "half") == half_hourly
    assert all(p["name"] == "tests.jobs.record" and p["queue"] == PARKED for p in pushed)
    assert int(r.hget(ns.keys.cron_last, "half")) == pushed[-1]["fire_at"]


def test_one_holder_and_the_fire_script_refuses_others_and_old_fire_times(ns, r):
    entries = [periodic("* * * * * *", jobs.record, args=("k", "v"), name="tick", queue=PARKED)]
    a, b = scheduler(r, ns, entries, "host:1:aa"), scheduler(r, ns, entries, "host:2:bb")
    a.step()
    b.step()
    assert a.leader and not b.leader
    assert r.get(ns.keys.cron_leader(a.table.signature)) == "host:1:aa"
    assert 0 < r.pttl(ns.keys.cron_leader(a.table.signature)) <= 10_000
    fire = scripts.register(r).cron_fire

    def call(identity, *fire_times):
        args = [identity, ns.keys.queue_prefix]
        for t in fire_times:
            args += ["tick", t, PARKED, json.dumps({"name": "tests.jobs.record", "fire_at": t})]
        keys = [a.lease_key, ns.keys.cron_last, ns.keys.queues, ns.keys.wake]
        return fire(keys=keys, args=args)

    r.delete(ns.keys.queue(PARKED), ns.keys.cron_last)
    assert call("host:2:bb", 2000) == -1  # not the holder: nothing pushed
    assert call("host:1:aa", 2000, 2001) == [1, 1]
    assert call("host:1:aa", 2001, 2000, 2002) == [0, 0, 1]  # each fire time once, never an older one
    assert [p["fire_at"] for p in parked(r, ns)] == [2000, 2001, 2002]
    assert r.hget(ns.keys.cron_last, "tick") == "2002" and r.zcard(ns.keys.wake) == 1
    a.stop()  # gives the lease back: the other takes it at its next step
    assert not r.exists(a.lease_key)
    b.step()
    assert b.leader


def test_a_new_holder_catches_up_what_the_dead_one_had_not_enqueued(ns, r):
    entries = [periodic("* * * * * *", jobs.record, args=("k", "v"), name="tick", queue=PARKED)]
    a = scheduler(r, ns, entries, "host:1:aa", heartbeat=0.5)  # lease 1 s
    b = scheduler(r, ns, entries, "host:2:bb", heartbeat=0.5)
    a.step()
    b.step()
    wait_for(lambda: a.step() is not None and len(parked(r, ns)) >= 2, 5, "the holder to enqueue")
    killed_at = time.time()  # a dies here: it neither fires nor renews nor gives the lease back
    time.sleep(2.0)  # fire times pass while nobody enqueues (b's last call is recent enough to count as running)
    b.step()
    took_over = time.time()
    assert b.leader
    fires = [p["fire_at"] for p in parked(r, ns)]
    assert fires == list(range(fires[0], fires[-1] + 1))  # every second, once: none lost in the handover
    caught_up = [p for p in parked(r, ns) if killed_at < p["fire_at"] < took_over]
    assert len(caught_up) >= 1 and all(p["enqueued_at"] >= took_over - 0.1 for p in caught_up)


def test_fire_times_that_passed_while_no_scheduler_ran_are_skipped(ns, r):
    entries = [periodic("* * * * * *", jobs.record, args=("k", "v"), name="tick", queue=PARKED)]
    now = time.time()
    r.hset(ns.keys.cron_last, "tick", int(now) - 8)  # a scheduler enqueued 8 s ago, then all stopped
    s = scheduler(r, ns, entries, heartbeat=0.5)
    s.step()
    assert s.leader and parked(r, ns) == []  # nothing of the last 8 s: nobody ran
    s.fire_due(now + 2.5)
    assert [p["fire_at"] for p in parked(r, ns)] == [int(now) + 1, int(now) + 2]


def test_after_an_outage_the_holder_skips_fire_times_older_than_the_catch_up(ns, r, caplog):
    entries = [periodic("* * * * * *", jobs.record, args=("k", "v"), name=f"tick-{i}", queue=PARKED) for i in range(3)]
    clock = Clock(time.time())
    s = scheduler(r, ns, entries, clock=clock)
    s.step()
    start = int(clock.now)
    caplog.set_level(logging.WARNING, "jiggler_gevent.scheduler")
    clock.now = start + 100.2  # as if Redis had not answered for 100 s
    s.fire_due(clock.now)
    fires = sorted({p["fire_at"] for p in parked(r, ns)})
    assert fires == list(range(start + 100 - int(s.catch_up) + 1, start + 101))
    assert len(parked(r, ns)) == 3 * len(fires)
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1 and "skipped for 3 entries: tick-0, tick-1, tick-2" in warnings[0]


def test_the_table_and_its_signature():
    one = [periodic("@daily", jobs.record, args=("k", "v"), name="a")]
    table = Table.of(one)
    assert json.loads(table.json)[0] == {
        "name": "a",
        "cron": "@daily",
        "tz": "UTC",
        "job": "tests.jobs.record",
        "queue": "default",
        "args": ["k", "v"],
        "kwargs": {},
        "retries": 25,
        "timeout": None,
        "dead": True,
    }
    two = one + [periodic("@hourly", jobs.record, args=("k", "v"), name="b")]
    assert Table.of(list(reversed(two))) == Table.of(two) and Table.of(two).signature != table.signature


# -- real worker processes ---------------------------------------------------------------------------------------


def _env(tkey, sets: str) -> dict:
    return {"JIGGLER_TEST_CRON": sets, "JIGGLER_TEST_CRON_KEY": tkey("cron")}


def _holder(r, ns) -> int | None:
    """The pid of the process holding the lease of the test entries, or None while nobody holds it."""
    holders = [r.get(key) for key in r.scan_iter(f"{ns.namespace}:cron:leader:*")]
    assert len(holders) <= 1  # the three workers have the same entries: one lease
    return int(holders[0].split(":")[1]) if holders and holders[0] else None


def test_three_workers_enqueue_every_second_once_while_the_holder_is_killed(ns, r, start_worker, tkey):
    workers = [start_worker(*FAST, "-c", "2", env=_env(tkey, "parked")) for _ in range(3)]
    wait_for(lambda: len(api.ProcessSet()) == 3, 30, "three workers")
    wait_for(lambda: len(parked(r, ns)) >= 5, 10, "five seconds of fire times")
    holder = wait_for(lambda: _holder(r, ns), 5, "a holder")
    [victim] = [w for w in workers if w.pid == holder]
    wait_for(lambda: 0.4 < time.time() % 1 < 0.6, 2, "mid-second", interval=0.01)  # between two fire times
    killed_at = time.time()
    victim.signal(signal.SIGKILL)
    victim.proc.wait(10)
    wait_for(lambda: _holder(r, ns) not in (None, holder), 10, "another worker to take the lease")
    wait_for(lambda: parked(r, ns)[-1]["fire_at"] >= killed_at + 5, 10, "5 s more of fire times")
    for w in workers:
        if w is not victim:
            assert w.stop() == 0
    fires = [p["fire_at"] for p in parked(r, ns)]
    assert len(fires) == len(set(fires)), "a fire time was enqueued twice"
    gaps = [b - a for a, b in zip(fires, fires[1:], strict=False)]
    assert max(gaps) == 1, f"fire times lost: gaps {gaps}"  # the takeover caught up every second
    assert len(fires) >= 10
    delays = [p["enqueued_at"] - p["fire_at"] for p in parked(r, ns)]
    around_kill = [d for p, d in zip(parked(r, ns), delays, strict=True) if p["fire_at"] > killed_at - 1]
    print(f"largest gap {max(gaps)} s; enqueue delays from 1 s before the kill: {[round(d, 2) for d in around_kill]}")
    assert max(around_kill) < 1 + 1 + 1.5  # lease (1 s) + one follower interval (<= 1.2 s) + margin
    steady = [d for p, d in zip(parked(r, ns), delays, strict=True) if p["fire_at"] < killed_at - 1]
    # on time as a rule (a scheduler a second late shows in the median); a loaded machine delays one now and then
    assert statistics.median(steady) < 0.5 and max(steady) < 2.5, steady


def test_cpu_burning_jobs_do_not_delay_the_fire_times(ns, r, start_worker, tkey):
    w = start_worker(*FAST, "-c", "5", env=_env(tkey, "parked"))
    wait_for(lambda: len(parked(r, ns)) >= 1, 20, "the first fire time")
    jobs.cpu_hog.enqueue_bulk([(tkey("hog"), 6.0)] * 5)
    wait_for(lambda: r.llen(tkey("hog") + ":started") == 5, 10, "5 CPU-bound jobs running")
    burning_from = time.time()
    wait_for(lambda: r.llen(tkey("hog")) == 5, 20, "the CPU-bound jobs to end", interval=0.2)
    burning_until = time.time()
    assert w.stop() == 0
    during = [p for p in parked(r, ns) if burning_from <= p["fire_at"] <= burning_until]
    delays = [p["enqueued_at"] - p["fire_at"] for p in during]
    print(f"{len(during)} fire times while 5 jobs burned CPU: enqueue delays {sorted(round(d, 3) for d in delays)}")
    # Each job burns 6 s: without pre-emption a fire would wait that long. Delays are 0.5 s at most on an idle
    # 2-core machine and reached 1.26 s once beside another test process, so the bound is a safety margin.
    assert len(during) >= 5 and max(delays) < 2.5
    fires = [p["fire_at"] for p in parked(r, ns)]
    assert fires == list(range(fires[0], fires[-1] + 1))


def test_a_periodic_job_runs_and_reads_its_fire_time(ns, r, start_worker, tkey):
    w = start_worker(*FAST, env=_env(tkey, "run"))
    wait_for(lambda: r.llen(tkey("cron") + ":runs") >= 3, 20, "three runs")
    assert w.stop() == 0
    runs = [json.loads(x) for x in r.lrange(tkey("cron") + ":runs", 0, -1)]
    assert {run["periodic"] for run in runs} == {"every-second-run"}
    delays = [run["enqueued_at"] - run["fire_at"] for run in runs]
    assert all(isinstance(run["fire_at"], int) for run in runs)
    # never before its fire time; on time as a rule, with room for one run a loaded machine delayed
    assert min(delays) >= 0 and statistics.median(delays) < 0.5 and max(delays) < 2.5, delays
    assert r.lrange(tkey("cron"), 0, -1) == ["run"] * r.llen(tkey("cron"))


def test_a_redis_outage_is_logged_once_and_the_scheduler_carries_on(ns, redis_server, worker_at, tkey):
    server = redis_server(directives=["appendonly yes", "appendfsync always"])
    cfg = config.configure(redis_url=server.url, namespace=ns.namespace)
    c = server.client()
    w = worker_at(server.url, *FAST, env=_env(tkey, "parked"))

    def fires() -> list[int]:
        return [json.loads(raw)["fire_at"] for raw in reversed(c.lrange(cfg.keys.queue(PARKED), 0, -1))]

    wait_for(lambda: len(fires()) >= 2, 20, "the first fire times")
    server.stop()
    time.sleep(4)  # the outage itself, not a synchronisation
    server.start()
    back = time.time()
    wait_for(lambda: fires()[-1] >= back + 2, 20, "fire times after the outage")
    assert w.proc.poll() is None
    assert w.stop() == 0
    got = fires()
    assert len(got) == len(set(got))
    log = w.output()
    assert log.count("periodic scheduler: Redis unreachable") == 1, log
    assert log.count("periodic scheduler: Redis answers again") == 1, log
    assert "Traceback" not in log and os.path.exists(w.log_path)
