"""Redis Sentinel: redis+sentinel:// URLs, the whole path of a job through a Sentinel-managed pair, and failovers
(the master SIGKILLed, the replica promoted) that workers, clients, commands and the dashboard ride out.

Jobs of the failover test record their runs on the shared test Redis, which no failover touches, so lost and
doubled jobs can be counted. There the replica lags LAG seconds behind the master (a proxy), so that pushes the
master acknowledged can be lost without `wait_replicas` (docs/high-availability.md has the figures).
"""

import json
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis

from jiggler_gevent import api, config
from jiggler_gevent.connect import SentinelTarget, check_url, parse_sentinel_url
from jiggler_gevent.errors import EnqueueError
from jiggler_gevent.web import create_app
from tests import fault_jobs, jobs
from tests.conftest import ROOT, wait_for
from tests.redis_servers import cpu_seconds
from tests.test_security import FAST, _exercise
from tests.test_web import Browser

pytest_plugins = ["tests.sentinel_servers"]

LOAD = 5000
LAG = 0.05  # seconds the replica lags behind the master in the failover test
PUSHERS = 16  # threads that push at once (WAIT makes each push wait for the lagging replica)
GRACE = 5.0  # seconds past the failover within which everything must work again
PAGES = ("/", "/queues", "/retries", "/dead", "/scheduled", "/busy")


def test_sentinel_urls_are_read_checked_and_redacted():
    target = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380/main/3")
    assert target == SentinelTarget((("10.0.0.1", 26379), ("::1", 26380)), "main", 3, None, "s@cret")
    assert parse_sentinel_url("redis+sentinel://u:p@h:1/m") == SentinelTarget((("h", 1),), "m", 0, "u", "p")
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h/m", "redis+sentinel://h:1/m/x", "redis+sentinel:///m"):
        with pytest.raises(ValueError):
            check_url(bad)
    assert config.redacted("redis+sentinel://:pw@a:1,b:2/m/1") == "redis+sentinel://:***@a:1,b:2/m/1"
    bad = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "stats", "--redis-url", "redis+sentinel://:pw@h:x/m"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a usable Redis URL" in bad.stderr and "pw" not in bad.stderr


def test_wait_replicas_refuses_a_push_no_replica_acknowledged(ns, tkey):
    config.configure(wait_replicas=1, wait_timeout=0.2)  # the shared test Redis has no replica
    with pytest.raises(EnqueueError, match=r"only 0 of 1 replica\(s\) acknowledged"):
        jobs.record.enqueue(tkey("x"), "y")


def test_worker_wait_replicas_applies_to_the_pushes_its_jobs_make(start_worker, ns, r, tkey):
    w = start_worker("-r", "tests.jobs", "--wait-replicas", "1")
    jobs.enqueue_record.enqueue(tkey("x"), "v")  # the shared test Redis has no replica: the inner push is not acked
    wait_for(lambda: r.zcard(ns.keys.dead) == 1, 30, "the enqueuing job dead")
    [dead] = r.zrange(ns.keys.dead, 0, -1)
    assert json.loads(dead)["error_class"] == "EnqueueError"
    assert "only 0 of 1 replica(s) acknowledged" in json.loads(dead)["error_message"]
    assert w.stop() == 0


def _pages_render(url: str, ns) -> None:
    config.configure(redis_url=url, namespace=ns.namespace)
    web = Browser(create_app())
    for path in PAGES:
        page = web.get(path)
        assert page.code == 200, (path, page.text[:500])


def _gj_stats(url: str, ns) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "stats", "--redis-url", url, "--namespace", ns.namespace],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_whole_path_through_sentinel_and_a_failover(sentinel_pair, worker_at, ns, tkey):
    pair = sentinel_pair(password="pw-sentinel")
    url = pair.url
    _exercise(url, ns, worker_at, tkey, "-v")  # enqueue, run, retry, scheduled, dead, recovery, stats
    _pages_render(url, ns)
    c = config.redis_client(url)
    worker = worker_at(url, "-c", "4", *FAST)
    jobs.record.enqueue(tkey("before"), "x")
    long_jid = jobs.started_then_nap.enqueue(tkey("long"), 60)
    wait_for(lambda: c.llen(tkey("before")) == 1 and c.llen(tkey("long") + ":started"), 20, "jobs before the failover")
    cpu_before = cpu_seconds(worker.pid)
    took = pair.fail_over()
    cpu_outage = cpu_seconds(worker.pid) - cpu_before
    back = time.monotonic()
    jobs.record.enqueue(tkey("after"), "x")  # the client rides the failover (redis-py retries, then Sentinel)
    jobs.record.enqueue_in(0.2, tkey("after"), "scheduled")
    wait_for(lambda: c.llen(tkey("after")) == 2, took + GRACE, "jobs after the failover")
    print(
        f"failover {took:.1f}s, jobs running again {time.monotonic() - back:.1f}s later, worker CPU {cpu_outage:.2f}s"
    )
    assert cpu_outage < took / 2, "the worker spun during the outage"
    assert _gj_stats(url, ns).returncode == 0
    _pages_render(url, ns)
    # The cancellation listener follows the failover too: the job it started before is stopped.
    wait_for(lambda: dict(c.pubsub_numsub(ns.keys.cancel_channel))[ns.keys.cancel_channel], 10, "re-subscribed")
    assert api.Job(long_jid).cancel() is True
    stopped = f"cancelled tests.jobs.started_then_nap jid={long_jid}"
    wait_for(lambda: stopped in worker.output(), 10, "the running job stopped by its worker")
    assert worker.stop() == 0
    warnings = [line for line in worker.output().splitlines() if "WARNING" in line or "ERROR" in line]
    print("\n".join(warnings))
    assert len([w for w in warnings if "Redis Sentinel failover" in w]) == 1, warnings  # one line per outage
    assert "pw-sentinel" not in worker.output()


def _push(url: str, key: str, accepted: list[str], refused: list[int]) -> None:
    """Enqueue mark jobs one by one until LOAD are accepted; a refused push is retried as a new job."""
    while len(accepted) < LOAD:
        try:
            accepted.append(fault_jobs.mark.enqueue(url, key))
        except EnqueueError:
            refused.append(1)
            time.sleep(0.05)  # not a synchronisation: the pause of a client that retries


@pytest.mark.slow
@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_failover_under_load_counts_lost_and_doubled_jobs(sentinel_pair, worker_at, ns, redis_url, wait_replicas):
    pair = sentinel_pair(lag=LAG)
    url = pair.url
    config.configure(redis_url=url, namespace=ns.namespace, wait_replicas=wait_replicas, wait_timeout=0.5)
    recorder = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{ns.namespace}:t:ran"  # on the shared test Redis: deleted with the namespace
    # Beats of 1 s: a process is presumed dead after 12 s, longer than the failover (0.2 s beats would expire
    # during it, and the other worker would put back jobs still running: doubled by the test's settings).
    beats = ("--heartbeat-interval", "1", "--poll-interval", "0.2", "-t", "1")
    workers = [worker_at(url, "-r", "tests.fault_jobs", "-c", "20", *beats) for _ in range(2)]
    accepted: list[str] = []
    refused: list[int] = []
    pushers = [
        threading.Thread(target=_push, args=(redis_url, key, accepted, refused), daemon=True) for _ in range(PUSHERS)
    ]
    for t in pushers:
        t.start()
    wait_for(lambda: len(accepted) >= LOAD // 2, 60, "half the jobs pushed")
    took = pair.fail_over()
    if wait_replicas:
        pair.rejoin_old_master()  # WAIT needs a replica again; until then pushes are refused, none lost
    for t in pushers:
        t.join(120)
    assert len(accepted) >= LOAD
    wanted = set(accepted)
    ran = lambda: set(recorder.lrange(key, 0, -1)) & wanted  # noqa: E731
    if wait_replicas:
        wait_for(lambda: ran() == wanted, took + 60, "every accepted job to run")
    else:  # some may be lost: wait until the queues are empty and nothing runs
        c = config.redis_client(url)
        wait_for(lambda: c.llen(ns.keys.queue("default")) == 0 and c.zcard(ns.keys.retry) == 0, 60, "queue drained")
        wait_for(lambda: _settled(recorder, key), 30, "the workers to go idle")
    runs = Counter(j for j in recorder.lrange(key, 0, -1) if j in wanted)
    lost = len(wanted - set(runs))
    doubled = sum(1 for n in runs.values() if n > 1)
    print(
        f"wait_replicas={wait_replicas}, replica lag {LAG}s: failover {took:.1f}s, {len(wanted)} accepted, "
        f"lost {lost}, doubled {doubled}, refused {len(refused)}"
    )
    for w in workers:
        assert w.stop() == 0
    if wait_replicas:
        assert lost == 0


def _settled(recorder: redis.Redis, key: str) -> bool:
    """True when the number of recorded runs has not changed for half a second (the workers are idle)."""
    before = recorder.llen(key)
    time.sleep(0.5)  # a quiet period is the condition itself
    return recorder.llen(key) == before
