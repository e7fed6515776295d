"""Everything against a 3-master Redis Cluster (`redis+cluster://`): the acceptance path with real worker
processes (enqueue, run, retry, scheduled, dead, recovery after SIGKILL, stats, the dashboard's pages), each Lua
script family (unique push, limits, cron, results / batches / cancel), `gjiggler` commands, and the hash tag
that keeps one namespace's keys in one slot.

The cluster is private to the session (tests/cluster_servers.py); each test has its own namespace on it.
"""

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from jiggler_gevent import Batch, api, chain, chord, config, group, limits
from jiggler_gevent.cluster import parse_cluster_url, slot_client
from jiggler_gevent.connect import client_for
from jiggler_gevent.web import create_app
from tests import batch_jobs, jobs, limit_jobs, result_jobs, workflow_jobs
from tests.cluster_servers import Cluster, redis_cluster  # noqa: F401  (the session fixture)
from tests.conftest import ROOT, gjiggler_command, identity_of, wait_for
from tests.test_web import Browser

LOAD = ("-r", "tests.result_jobs", "-r", "tests.limit_jobs", "-r", "tests.batch_jobs")
FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2")  # presumed dead 2.4 s after a SIGKILL


@pytest.fixture
def ns(redis_cluster: Cluster) -> Iterator[config.Config]:  # noqa: F811
    """A fresh namespace on the cluster (overrides conftest's, so `r`, `tkey` and `start_worker` use it)."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    cfg = config.configure(redis_url=redis_cluster.url, namespace=namespace)
    yield cfg
    client = config.redis_client(cfg.url)
    for key in list(client.scan_iter(match=f"*{namespace}*", count=1000)):  # every master
        client.delete(key)
    config.reset()


def _slots(r, namespace: str) -> dict[int, list[str]]:
    """The keys of the namespace on the cluster, by hash slot."""
    slots: dict[int, list[str]] = {}
    for key in r.scan_iter(match=f"*{namespace}*", count=1000):
        if ":t:" not in key:  # the tests' own record keys (tkey) are not the namespace's
            slots.setdefault(r.keyslot(key), []).append(key)
    return slots


def _idle(r, ns) -> bool:
    k = ns.keys
    queued = sum(r.llen(k.queue(q)) for q in r.smembers(k.queues))
    working = sum(r.llen(k.working(i)) for i in r.smembers(k.processes))
    return queued == 0 and working == 0 and r.zcard(k.retry) == 0


def test_urls_and_key_names(redis_cluster):  # noqa: F811
    target = parse_cluster_url("redis+cluster://:s%40cret@10.0.0.1:7000,[::1]:7001")
    assert target.nodes == (("10.0.0.1", 7000), ("::1", 7001)) and target.password == "s@cret"
    assert target.username is None
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_cluster_url("redis+cluster://:pw@10.0.0.1")
    assert config.Config(redis_url=redis_cluster.url, namespace="app").keys.queue("x") == "{app}:queue:x"
    assert config.Config(redis_url="redis://127.0.0.1:6379/0", namespace="app").keys.queue("x") == "app:queue:x"
    assert "cluster-secret" not in config.redacted(redis_cluster.url)
    assert redis_cluster.servers[0].port and str(redis_cluster.servers[2].port) in config.redacted(redis_cluster.url)


def test_acceptance_path_enqueue_run_retry_scheduled_dead_stats_and_dashboard(ns, r, start_worker, tkey):
    jobs.record.enqueue_bulk([(tkey("runs"), str(i)) for i in range(200)])
    retry_jid = jobs.fail_times.enqueue(tkey("ft"), 1)
    dead_jid = jobs.always_fail.enqueue(tkey("af"))
    sched_jid = jobs.record.enqueue_in(1, tkey("sched"), "later")
    assert api.Job(sched_jid).status == "scheduled"
    w = start_worker("-c", "10", *FAST)
    wait_for(lambda: r.llen(tkey("runs")) == 200, 30, "200 runs")
    assert sorted(r.lrange(tkey("runs"), 0, -1), key=int) == [str(i) for i in range(200)]
    wait_for(lambda: r.lrange(tkey("sched"), 0, -1) == ["later"], 15, "the scheduled job run")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1 and r.zcard(ns.keys.retry) == 1, 15, "one dead, one retrying")
    assert api.DeadSet().find(dead_jid) is not None and api.RetrySet().find(retry_jid) is not None

    web = Browser(create_app())
    home = web.get("/")
    assert home.code == 200 and re.search(r'data-stat="dead_size">1<', home.text)
    assert re.search(r'data-stat="retry_size">1<', home.text) and api.redis_info()["version"] in home.text
    for path in ("/busy", "/queues", "/queues/default", "/retries", "/scheduled", "/dead", "/cron", "/limits"):
        assert web.get(path).code == 200, path
    assert dead_jid in web.get("/dead").text and retry_jid in web.get("/retries").text
    assert json.loads(web.get("/stats.json").text)["dead_size"] == 1
    assert web.post("/retries", {"bulk": "retry-all"}).code in (302, 303)  # "retry now" from the dashboard

    wait_for(lambda: r.llen(tkey("ft")) == 2 and _idle(r, ns), 15, "the retried job's second run")
    wait_for(lambda: api.Stats().processed == 204, 10, "the counts flushed by a heartbeat")
    stats = api.Stats()
    assert stats.processed == 204 and stats.failed == 2 and stats.dead_size == 1 and stats.retry_size == 0
    assert [p.identity.split(":")[1] for p in stats.process_list] == [str(w.pid)]
    assert w.stop() == 0
    slots = _slots(r, ns.namespace)
    assert len(slots) == 1, f"the namespace's keys spread over slots {sorted(slots)}"
    keys = next(iter(slots.values()))
    assert ns.keys.dead in keys and all(k.startswith("{" + ns.namespace + "}:") for k in keys)


def test_recovery_after_sigkill(ns, r, start_worker, tkey):
    first = start_worker("-c", "5", *FAST)
    jobs.started_then_nap.enqueue_bulk([(tkey("k"), 2)] * 5 + [(tkey("k"), 0.1)] * 20)
    wait_for(lambda: r.llen(tkey("k") + ":started") >= 5, 15, "5 jobs started")
    identity = identity_of(r, ns, first.pid)
    first.kill()
    assert r.llen(ns.keys.working(identity)) == 5
    second = start_worker("-c", "10", *FAST)
    wait_for(lambda: r.llen(tkey("k") + ":finished") >= 25, 30, "every job finished")
    assert second.stop() == 0
    started, finished = r.llen(tkey("k") + ":started"), r.llen(tkey("k") + ":finished")
    assert 25 <= finished <= 30 and started <= 30  # only the 5 running at the kill may run twice
    assert r.llen(ns.keys.queue("default")) == 0 and r.zcard(ns.keys.dead) == 0
    assert not r.exists(ns.keys.working(identity)) and identity not in r.smembers(ns.keys.processes)


def test_unique_push_and_release(ns, r, tkey, start_worker):
    key = tkey("u")
    jid = limit_jobs.unique_record.enqueue(key)
    assert jid is not None and limit_jobs.unique_record.enqueue(key) is None  # push_each: lock held
    assert len(r.keys(ns.keys.unique("*"), target_nodes=r.ALL_NODES)) == 1
    start_worker(*LOAD, "-c", "2")
    wait_for(lambda: r.llen(key) == 1, 20, "the unique job's run")
    wait_for(lambda: limit_jobs.unique_record.enqueue(key) is not None, 10, "the lock released by the settle")


def test_limits_concurrent_window_and_bucket(ns, r):
    limiter = limits.concurrent("c", 1, lock_timeout=30)
    token = limiter.acquire()
    with pytest.raises(limits.OverLimit):
        limiter.acquire(wait_timeout=0.2)
    limiter.release(token)
    limiter.release(limiter.acquire(wait_timeout=1))
    window = limits.window("w", 2, per=60)
    window.acquire(), window.acquire()
    with pytest.raises(limits.OverLimit):
        window.acquire()
    bucket = limits.bucket("b", 1, per=60)
    bucket.acquire()
    with pytest.raises(limits.OverLimit):
        bucket.acquire()
    assert {limit.name for limit in api.Limits()} == {"c", "w", "b"}


def test_cron_lease_and_fire(ns, r, tkey, start_worker):
    env = {"JIGGLER_TEST_CRON": "parked", "JIGGLER_TEST_CRON_KEY": tkey("cron")}
    w = start_worker("-r", "tests.cron_jobs", *FAST, env=env)
    wait_for(lambda: r.llen(ns.keys.queue("cron-parked")) >= 2, 15, "two fire times enqueued")
    assert r.hkeys(ns.keys.cron_last)
    fired = [json.loads(p)["fire_at"] for p in r.lrange(ns.keys.queue("cron-parked"), 0, -1)]
    assert len(fired) == len(set(fired))  # each fire time once
    assert w.stop() == 0


def test_results_batches_and_cancel(ns, r, tkey, start_worker):
    key = tkey("res")
    start_worker(*LOAD, "-c", "5", *FAST)
    assert api.Job(result_jobs.give.enqueue(key, {"a": [1, 2]})).result(timeout=20) == {"a": [1, 2]}

    batch = Batch(on_complete=batch_jobs.on_complete, on_success=batch_jobs.on_success, callback_args=[key])
    with batch:
        for i in range(5):
            batch_jobs.member.enqueue(key, i)
    wait_for(lambda: r.llen(key + ":success") == 1 and r.llen(key + ":complete") == 1, 20, "both callbacks")
    assert api.BatchStatus(batch.bid).success and api.BatchStatus(batch.bid).total == 5

    scheduled = result_jobs.sleep_long.enqueue_in(30, key + ":s", 0.1)
    assert api.Job(scheduled).cancel() is True and r.zcard(ns.keys.schedule) == 0  # cancel.lua
    running = result_jobs.sleep_long.enqueue(key + ":r", 60)
    wait_for(lambda: api.Job(running).status == "running", 20, "the long job running")
    asked = time.monotonic()
    assert api.Job(running).cancel() is True  # heard by the worker over NS:cancel (pub/sub)
    wait_for(lambda: api.Job(running).status == "cancelled", 10, "the running job stopped")
    assert time.monotonic() - asked < 10
    assert api.Job(scheduled).status == "cancelled"


def test_a_workflow_of_every_shape(ns, r, start_worker):
    # workflow_push, workflow_cancel and the steps pushed by settle: every key of a workflow in the namespace's slot.
    w = workflow_jobs
    start_worker("-r", "tests.workflow_jobs", "-c", "5")
    wf = chain(w.add.s(1, 1), group(w.add.s(1), w.add.s(2)), w.total.s()).enqueue()
    assert wf.result(timeout=30) == 7
    assert chord([w.add.s(i, 1) for i in range(5)], w.total.s()).enqueue().result(timeout=30) == 15
    assert len(_slots(r, ns.namespace)) == 1
    waiting = chain(w.add.set(queue="nobody").s(1), w.add.s(1)).enqueue()
    assert api.Workflow(waiting.id).cancel() is True
    with pytest.raises(api.JobCancelled):
        waiting.result(timeout=5)


def test_gjiggler_commands_take_a_cluster_url(ns, r):
    jobs.record.enqueue_in(60, "cli", "x")
    out = subprocess.run(
        gjiggler_command(ns, "stats", "--json"), cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout)["scheduled_size"] == 1
    subprocess.run(gjiggler_command(ns, "clear-scheduled"), cwd=ROOT, capture_output=True, timeout=60, check=True)
    assert r.zcard(ns.keys.schedule) == 0
    bad = subprocess.run(
        gjiggler_command(ns, "stats")[:-4] + ["--redis-url", "redis+cluster://:pw@nohostport"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a usable Redis URL" in bad.stderr and "pw" not in bad.stderr


def _move_slot(router, slot: int, target) -> None:
    """Give an empty `slot` to the master `target`, telling the target first, then every other master."""
    owner_id = router.execute_command("CLUSTER MYID", target_nodes=target)
    masters = sorted(router.get_primaries(), key=lambda node: node is not target)
    for node in masters:
        router.execute_command("CLUSTER SETSLOT", slot, "NODE", owner_id, target_nodes=node)


def test_slot_client_follows_its_slot_to_another_master(ns):
    router = client_for(ns.url, 10)
    key = ns.keys.working("slot-client")
    conn = slot_client(router, key)
    source = router.get_node_from_key(key)
    assert conn.llen(key) == 0 and (conn.connection.host, conn.connection.port) == (source.host, source.port)
    target = next(node for node in router.get_primaries() if node is not source)
    _move_slot(router, router.keyslot(key), target)
    # The old master answers MOVED: the command goes through the RedisCluster, and the connection follows.
    assert conn.rpush(key, "a", "b") == 2
    assert (conn.connection.host, conn.connection.port) == (target.host, target.port)
    assert conn.lmove(key, ns.keys.working("slot-client-2"), "LEFT", "RIGHT") == "a"
    assert router.lrange(key, 0, -1) == ["b"] and router.get_node_from_key(key) is target


def test_slot_client_survives_its_connection_being_killed(ns):
    router = client_for(ns.url, 10)
    key = ns.keys.working("slot-client-killed")
    conn = slot_client(router, key)
    assert conn.rpush(key, "a") == 1
    node = router.get_node_from_key(key)
    killed = router.execute_command("CLIENT KILL", "ID", conn.client_id(), target_nodes=node)
    assert killed == 1
    assert conn.rpush(key, "b") == 2 and router.lrange(key, 0, -1) == ["a", "b"]
    assert conn.connection is not None and conn.llen(key) == 2


def test_priorities_and_groups_in_order_with_their_keys_in_the_namespaces_slot(ns, r, start_worker, tkey):
    key = tkey("prio")
    api.Queue("default").pause()
    for priority, value in ((0, "plain"), (-2, "low"), (9, "urgent")):
        jobs.record.set(priority=priority).enqueue(key, value)
    for value in ("a1", "a2"):
        jobs.record.set(group="a").enqueue(key, value)
    jobs.record.set(group="b").enqueue(key, "b1")
    assert len(api.Queue("default")) == 6 and api.Queue("default").groups() == {"a": 2, "b": 1}
    assert len(_slots(r, ns.namespace)) == 1
    start_worker("-c", "1", *FAST)
    api.Queue("default").resume()
    wait_for(lambda: r.llen(key) == 6, 30, "the 6 jobs")
    assert r.lrange(key, 0, -1) == ["urgent", "a1", "b1", "plain", "a2", "low"]


def test_a_hash_pushed_beside_a_job_lands_with_it_in_the_namespaces_slot(ns, r):
    # the Django tasks backend's record (NS:djtask:<jid>) and its job, now and scheduled, in one script call
    from jiggler_gevent import client
    from jiggler_gevent import payload as payload_mod

    beside = []
    for at in (None, time.time() + 3600):
        payload = payload_mod.build("tests.jobs.record", ["k", "v"], queue="default")
        payload["result_ttl"] = 60
        record = client.Beside(ns.keys.django_task(payload["jid"]), 60, {"task": "t"})
        assert client.current().push_beside(payload, at, record) == payload["jid"]
        beside.append(record.key)
    assert [r.hgetall(key) for key in beside] == [{"task": "t"}] * 2
    assert len(api.Queue("default")) == 1 and len(api.ScheduledSet()) == 1
    assert len(_slots(r, ns.namespace)) == 1
