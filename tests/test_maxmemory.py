"""Redis refusing writes, on a private redis-server: out of memory (maxmemory reached with `noeviction`), and
every write refused (`min-replicas-to-write` with no replica, as READONLY or MISCONF refuse them).

The jobs record into the shared test Redis, which keeps taking writes, so every run is counted even while the
worker's Redis refuses them. Out of memory, Redis refuses what would grow memory (pushes, BLMOVE, the heartbeat)
but lets the fetch and settle scripts run (their first write is RPOP or LREM), so the worker drains its queue.
"""

import json
import re
import time
from collections import Counter

import pytest
import redis

from jiggler_gevent import config
from jiggler_gevent.errors import EnqueueError
from tests import fault_jobs
from tests.conftest import identity_of, wait_for
from tests.redis_servers import cpu_seconds

OOM = "OutOfMemoryError: command not allowed when used memory > 'maxmemory'"  # Redis' OOM error
FILLER_KEYS, FILLER_BYTES = 2000, 10_000  # about 20 MB the jobs' own keys are small next to
QUIET_OUTAGE = 5.0  # seconds the worker sits idle (or blocked on acknowledgements) while writes are refused


def _fill(c: redis.Redis) -> None:
    with c.pipeline(transaction=False) as pipe:
        for i in range(FILLER_KEYS):
            pipe.set(f"filler:{i}", "x" * FILLER_BYTES)
        pipe.execute()


def _cpu_over(pid: int, seconds: float) -> tuple[float, float]:
    """CPU seconds `pid` used over about `seconds` of wall time (the outage itself, not a synchronisation)."""
    cpu, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return cpu_seconds(pid) - cpu, time.monotonic() - t0


def _start(worker_at, server, ns, r, *args: str):
    w = worker_at(server.url, "-c", "10", "--heartbeat-interval", "2", *args)
    identity = wait_for(lambda: identity_of(server.client(), ns, w.pid), 20, "the worker registered")
    return w, ns.keys.working(str(identity))


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(r" (WARNING|ERROR) ", line)]


@pytest.mark.slow
def test_out_of_memory_refuses_pushes_and_loses_no_job(redis_server, worker_at, ns, r, tkey, redis_url):
    server = redis_server(directives=["maxmemory-policy noeviction"])
    c = server.client()
    _fill(c)
    config.configure(redis_url=server.url, namespace=ns.namespace)
    done = tkey("done")
    w, working = _start(worker_at, server, ns, r)
    jids = fault_jobs.mark.enqueue_bulk([(redis_url, done, 0.1)] * 300)  # 10 at a time: about 3 s of work
    wait_for(lambda: r.llen(done) >= 30, 20, "jobs running")

    c.config_set("maxmemory", int(c.info("memory")["used_memory"]) - 2_000_000)
    with pytest.raises(EnqueueError) as exc:
        fault_jobs.mark.enqueue(redis_url, done)
    assert OOM in str(exc.value) and "could not push 1 job(s) (tests.fault_jobs.mark)" in str(exc.value)
    with pytest.raises(EnqueueError, match=re.escape(OOM)):
        fault_jobs.mark.enqueue_in(60, redis_url, done)
    assert wait_for(lambda: c.llen(working), 5, "jobs held in the working list while Redis is out of memory")

    # Fetching and acknowledging go on: only what would grow memory is refused.
    wait_for(lambda: set(r.lrange(done, 0, -1)) >= set(jids), 60, "every queued job run while out of memory")
    wait_for(lambda: c.llen(working) == 0, 10, "every acknowledgement written while out of memory")
    cpu, outage = _cpu_over(w.pid, QUIET_OUTAGE)  # idle now: BLMOVE is refused
    with pytest.raises(EnqueueError, match=re.escape(OOM)):
        fault_jobs.mark.enqueue(redis_url, done)
    out_of_memory = w.output()

    c.config_set("maxmemory", 0)
    jids += fault_jobs.mark.enqueue_bulk([(redis_url, done, 0.0)] * 50)
    wait_for(lambda: set(r.lrange(done, 0, -1)) >= set(jids), 30, "the jobs pushed after memory freed run")
    wait_for(lambda: c.llen(working) == 0, 10, "every acknowledgement written")
    wait_for(lambda: "Redis has memory again" in w.output(), 10, "the fetcher back on BLMOVE")
    wait_for(lambda: "heartbeat restored" in w.output(), 10, "the heartbeat back")
    runs = Counter(r.lrange(done, 0, -1))
    assert w.stop() == 0
    print(f"\nmaxmemory: worker CPU {cpu:.3f}s over {outage:.1f}s out of memory and idle")
    assert set(runs) == set(jids) and set(runs.values()) == {1}, "a job was lost or ran twice"
    assert c.llen(ns.keys.queue("default")) == 0 and c.zcard(ns.keys.schedule) == 0
    assert cpu < 0.1 * outage, f"the worker busy-looped while Redis was out of memory: {cpu:.2f}s of CPU"
    assert "Traceback" not in out_of_memory, out_of_memory[-3000:]
    warned = _warnings(out_of_memory)
    assert sum("Redis refuses BLMOVE (out of memory)" in line for line in warned) == 1, warned
    assert sum("heartbeat failed" in line for line in warned) == 1, warned
    assert len(warned) == 2, f"more than one line per outage: {warned}"


@pytest.mark.slow
def test_refused_acknowledgements_keep_jobs_held_until_redis_takes_writes(
    redis_server, worker_at, ns, r, tkey, redis_url
):
    server = redis_server()
    c = server.client()
    config.configure(redis_url=server.url, namespace=ns.namespace)
    key = tkey("hold")
    w, working = _start(worker_at, server, ns, r)
    jids = fault_jobs.hold.enqueue_bulk([(redis_url, key, 1.0)] * 20)
    wait_for(lambda: r.llen(key + ":started") == 10, 20, "10 jobs running")

    c.config_set("min-replicas-to-write", 1)  # no replica: Redis refuses every write from now on
    with pytest.raises(EnqueueError, match="NOREPLICAS"):
        fault_jobs.hold.enqueue(redis_url, key, 0.0)
    wait_for(lambda: r.llen(key + ":finished") == 10, 20, "the running jobs finished")
    cpu, outage = _cpu_over(w.pid, QUIET_OUTAGE)
    finished = set(r.lrange(key + ":finished", 0, -1))
    held = c.lrange(working, 0, -1)
    assert len(held) == 10 and {json.loads(p)["jid"] for p in held} == finished, "a finished job's payload left"
    refused = w.output()

    c.config_set("min-replicas-to-write", 0)
    wait_for(lambda: r.llen(key + ":finished") == 20, 30, "every job run once writes are taken again")
    wait_for(lambda: c.llen(working) == 0, 10, "every acknowledgement written")
    started, ended = Counter(r.lrange(key + ":started", 0, -1)), Counter(r.lrange(key + ":finished", 0, -1))
    assert w.stop() == 0
    print(f"\nwrites refused: worker CPU {cpu:.3f}s over {outage:.1f}s holding 10 unacknowledged jobs")
    assert set(started) == set(ended) == set(jids) and set(started.values()) == {1}, "a job was lost or ran twice"
    assert c.llen(ns.keys.queue("default")) == 0
    assert cpu < 0.1 * outage, f"the worker busy-looped while its acknowledgements were refused: {cpu:.2f}s"
    assert "Traceback" not in refused, refused[-3000:]
    assert refused.count("could not acknowledge") == 1, _warnings(refused)
    assert refused.count("heartbeat failed") == 1, _warnings(refused)
    assert refused.count("fetch failed, retrying with back-off") <= 1, "more than one fetch warning for one outage"
    assert "acknowledgements written again after" in w.output()
