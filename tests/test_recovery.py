"""Jobs of a process that died without a clean stop are run again by the others, once; a poison job dies."""

import json
import time

from jiggler_gevent import config, limits, scripts
from jiggler_gevent.server.recovery import Recovery
from tests import jobs
from tests.conftest import wait_for

FAST = ("--heartbeat-interval", "0.2")  # presumed dead after 12 beats: 2.4 s


def test_killed_workers_jobs_run_to_completion_elsewhere(ns, r, start_worker, tkey):
    first = start_worker("-c", "5", *FAST)
    jids = jobs.started_then_nap.enqueue_bulk([(tkey("k"), 2)] * 5 + [(tkey("k"), 0.1)] * 20)
    wait_for(lambda: r.llen(tkey("k") + ":started") >= 5, 15, "5 jobs started")
    first.kill()
    second = start_worker("-c", "10", *FAST)
    wait_for(lambda: r.llen(tkey("k") + ":finished") >= 25, 30, "every job finished")
    assert second.stop() == 0
    finished = r.llen(tkey("k") + ":finished")
    started = r.llen(tkey("k") + ":started")
    assert finished >= 25
    # Only the jobs running at the kill may run twice.
    assert started - 25 <= 5 and finished - 25 <= 5
    assert r.llen(ns.keys.queue("default")) == 0 and r.zcard(ns.keys.dead) == 0
    assert len(jids) == 25


def test_adoption_is_exactly_once_and_only_after_the_heartbeat_expired(ns, r):
    client = config.redis_client(ns.url)
    s = scripts.register(client)
    k = ns.keys
    raws = [
        json.dumps({"jid": f"j{i}", "name": "tests.jobs.record", "args": ["x", "y"], "queue": "default"})
        for i in range(10)
    ]
    r.sadd(k.processes, "dead-one")
    r.rpush(k.working("dead-one"), *raws)
    r.set(k.process("dead-one"), "alive", px=60_000)
    a, b = Recovery(client, k, "me-a", s), Recovery(client, k, "me-b", s)
    assert a.sweep() == 0 and r.llen(k.working("dead-one")) == 10  # still beating: left alone
    r.delete(k.process("dead-one"))
    assert a.sweep() + b.sweep() == 10
    back = [json.loads(x) for x in r.lrange(k.queue("default"), 0, -1)]
    assert sorted(p["jid"] for p in back) == sorted(f"j{i}" for i in range(10))
    assert all(p["recoveries"] == 1 for p in back)
    assert r.llen(k.working("me-a")) == 0 and r.llen(k.working("me-b")) == 0
    assert not r.sismember(k.processes, "dead-one")


def test_recovery_gives_back_the_slots_and_the_lease_of_the_dead_process(ns, r):
    client = config.redis_client(ns.url)
    s, k = scripts.register(client), ns.keys
    limiter = limits.concurrent("c", 1)
    limits.set_holder("dead-one")  # as a worker process does
    try:
        limiter.acquire()
    finally:
        limits.set_holder("")
    lease = s.cron_lease(
        keys=[k.cron_leader("sig"), k.cron_seen("sig"), k.holds("dead-one")], args=["dead-one", 60_000, 60, "sig"]
    )
    assert lease[0] == 1 and r.get(k.cron_leader("sig")) == "dead-one"
    parked = json.dumps({"jid": "p1", "name": "tests.jobs.record", "args": ["x", "y"], "queue": "q"})
    r.zadd(k.schedule, {parked: time.time() + 300})
    r.rpush(k.limit_parked("c"), parked)
    r.sadd(k.processes, "dead-one")  # no heartbeat: dead
    assert r.zcard(k.limit("c")) == 1 and r.hlen(k.holds("dead-one")) == 2
    Recovery(client, k, "me", s).sweep()
    assert r.zcard(k.limit("c")) == 0 and r.llen(k.limit_free("c")) == 1  # freed, and a waiter woken
    assert r.lrange(k.queue("q"), 0, -1) == [parked] and r.zcard(k.schedule) == 0  # the parked job woken
    assert not r.exists(k.cron_leader("sig")) and not r.exists(k.holds("dead-one"))
    token = limiter.acquire()  # the slot is free now, 60 s before its lock timeout
    limiter.release(token)


def test_a_job_that_keeps_killing_its_worker_ends_in_the_dead_set(ns, r, start_worker, tkey):
    jid = jobs.exit_process.enqueue(tkey("deaths"))
    for _attempt in range(config.MAX_RECOVERIES + 3):
        w = start_worker("-c", "1", *FAST)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and w.proc.poll() is None and r.zcard(ns.keys.dead) == 0:
            time.sleep(0.05)
        if r.zcard(ns.keys.dead):
            w.stop()
            break
        assert w.proc.poll() is not None, "the worker neither died nor buried the job"
    [dead] = [json.loads(x) for x in r.zrange(ns.keys.dead, 0, -1)]
    assert dead["jid"] == jid and dead["error_class"] == "ProcessDied"
    assert "died" in dead["error_message"]
    assert r.llen(tkey("deaths")) == config.MAX_RECOVERIES + 1
    assert r.llen(ns.keys.queue("default")) == 0


def _held_by_a_dead_process(r, k, identity: str, *payloads: dict) -> list[str]:
    raws = [json.dumps({"name": "tests.jobs.record", "args": ["x", "y"], "queue": "default", **p}) for p in payloads]
    r.sadd(k.processes, identity)
    r.rpush(k.working(identity), *raws)
    return raws


def test_a_death_is_blamed_on_a_job_held_alone_while_no_other_process_dies(ns, r):
    """The rule of recovery.py, on the recovery script itself, each job one death short of the old limit (which
    buried whatever a process held at its 4th death)."""
    client = config.redis_client(ns.url)
    s, k = scripts.register(client), ns.keys
    recovery = Recovery(client, k, "me", s)
    many, blamed = config.MAX_RECOVERIES, config.BLAMED_DEATHS - 1
    r.lpush(k.queue("default"), "waiting")

    # Held with others: counted, not blamed, and sent to the back of the queue.
    _held_by_a_dead_process(r, k, "dead-a", *({"jid": f"s{i}", "recoveries": many} for i in range(3)))
    recovery.sweep()
    *recovered, first = r.lrange(k.queue("default"), 0, -1)  # workers take from the right
    assert first == "waiting"  # the recovered jobs went to the back, behind it
    back = {p["jid"]: p for p in map(json.loads, recovered)}
    assert sorted(back) == ["s0", "s1", "s2"]
    assert all(p["recoveries"] == many + 1 and "deaths_blamed" not in p for p in back.values())
    assert back["s0"]["died_in"] == ["dead-a"] and r.zrange(k.deaths, 0, -1) == ["dead-a"]

    # Alone, but dead-a died holding several jobs just before: processes die around it, so it is not blamed.
    _held_by_a_dead_process(r, k, "dead-b", {"jid": "lone", "recoveries": many, "deaths_blamed": blamed})
    recovery.sweep()
    assert r.zcard(k.dead) == 0
    lone = json.loads(r.lindex(k.queue("default"), 0))
    assert (lone["jid"], lone["recoveries"], lone["deaths_blamed"]) == ("lone", many + 1, blamed)

    # Alone, and the only other recent death is one it was held at itself: blamed, and buried.
    pill = {"jid": "pill", "recoveries": many, "deaths_blamed": blamed, "died_in": ["dead-a"]}
    _held_by_a_dead_process(r, k, "dead-c", pill)
    recovery.sweep()
    [dead] = [json.loads(x) for x in r.zrange(k.dead, 0, -1)]
    assert dead["jid"] == "pill" and dead["error_class"] == "ProcessDied"
    assert (dead["recoveries"], dead["deaths_blamed"]) == (many + 1, config.BLAMED_DEATHS)
    assert f"{config.BLAMED_DEATHS} of them while it ran this job alone" in dead["error_message"]


def test_the_job_that_kills_its_worker_is_buried_not_the_jobs_held_beside_it(ns, r, start_worker, tkey):
    """A poison pill fetched with three other jobs kills its process 0.5 s after it starts, with them, again and
    again: each worker started after a death recovers the four and fetches them together. Held at two deaths, each
    is a suspect and runs alone; the pill then dies alone and is buried, and the three run and succeed."""
    done, deaths = tkey("done"), tkey("deaths")
    innocents = jobs.started_then_nap.enqueue_bulk([(done, 1.0)] * 3)
    pill = jobs.exit_after.enqueue(deaths, 0.5)
    workers = [start_worker("-c", "4", *FAST)]

    def ended() -> bool:
        if workers[-1].proc.poll() is not None:
            workers.append(start_worker("-c", "4", *FAST))  # as a service manager restarts it
        return r.llen(done + ":finished") + r.zcard(ns.keys.dead) == len(innocents) + 1

    wait_for(ended, 90, "the pill buried and every other job ended", interval=0.1)
    buried = {p["jid"]: p for p in (json.loads(x) for x in r.zrange(ns.keys.dead, 0, -1))}
    assert list(buried) == [pill], f"{len(buried) - 1} job(s) held beside the pill were buried with it"
    assert buried[pill]["error_class"] == "ProcessDied" and r.llen(deaths) == buried[pill]["recoveries"]
    assert buried[pill]["recoveries"] == config.MAX_RECOVERIES + 1
    assert buried[pill]["deaths_blamed"] == config.BLAMED_DEATHS
    assert r.llen(done + ":started") > len(innocents), "no job was held beside the pill: the test shows nothing"
    assert r.llen(ns.keys.queue("default")) == 0
    assert any("running it alone" in w.output() for w in workers)
    assert workers[-1].stop() == 0
