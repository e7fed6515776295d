"""A partition: one worker host cut off from Redis for longer than the heartbeat TTL while it runs jobs.

Two "hosts" are network namespaces on a bridge (tests/netns.py), each with its own address, both working for a
private Redis bound to the bridge. Host A is cut off (its interface down) while it runs three jobs: it finishes
them meanwhile (one succeeds, one fails to be retried, one fails for good) but cannot write any outcome. Host B
sees A's heartbeat expire, adopts A's working list and runs the three jobs again. When A comes back its
outcomes must change nothing (the payloads are no longer in its working list), and A goes on taking jobs.
"""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from jiggler_gevent import config
from tests import partition_jobs
from tests.conftest import identity_of, wait_for
from tests.netns import Host, HostWorker, Network, require_ip
from tests.partition_jobs import CUT, RELEASE, runs
from tests.redis_servers import RedisServer

HEARTBEAT = 0.25  # a host silent for 12 beats (3 s) is presumed dead
CUT_SECONDS = 6.0  # how long A stays cut off at least: two heartbeat TTLs
WORKER_ARGS = ("-r", "tests.partition_jobs", "-c", "3", "--heartbeat-interval", str(HEARTBEAT))
HELD = ("cut-ack", "cut-retry", "cut-dead")
BACKGROUND = tuple(f"during-{i}" for i in range(10))
AFTER = tuple(f"after-{i}" for i in range(6))

StartWorker = Callable[[Host], HostWorker]


@pytest.fixture
def network() -> Iterator[Network]:
    """A bridge for the hosts; the namespaces and links are removed after the test, whatever happened."""
    require_ip()
    net = Network()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def private_redis(network: Network, redis_server: Callable[..., RedisServer], ns: config.Config) -> RedisServer:
    """A Redis reachable from the hosts (on the bridge's address) and from here (127.0.0.1), configured here."""
    server = redis_server(directives=[f"bind 127.0.0.1 {network.gateway}", "protected-mode no"])
    config.configure(redis_url=server.url, namespace=ns.namespace)
    return server


@pytest.fixture
def start_host_worker(network: Network, private_redis: RedisServer, ns: config.Config) -> Iterator[StartWorker]:
    """Start a worker inside a host; every one is killed before the network and Redis are taken down."""
    workers: list[HostWorker] = []
    url = f"redis://{network.gateway}:{private_redis.port}/0"

    def start(host: Host) -> HostWorker:
        w = HostWorker(host, url, ns, WORKER_ARGS)
        workers.append(w)
        return w

    try:
        yield start
    finally:
        network.heal()
        for w in workers:
            w.close()


def ended(directory: str, names: tuple[str, ...], host: str | None = None) -> bool:
    """True when every job in `names` has a run that ended well (on `host`, if given)."""
    found = runs(directory)
    return all(any(e[-1] == "ok" and host in (None, h) for h, e in found.get(n, [])) for n in names)


def beat_at(c: redis.Redis, ns: config.Config, identity: str) -> float:
    """The time of `identity`'s last heartbeat, 0 if it has none."""
    info = c.hget(ns.keys.process(identity), "info")
    return float(json.loads(info)["beat"]) if info else 0.0


@pytest.mark.slow
def test_a_host_cut_off_past_its_heartbeat_ttl_loses_its_jobs_and_comes_back(
    network: Network, private_redis: RedisServer, start_host_worker: StartWorker, ns: config.Config, tmp_path: Path
) -> None:
    c, d, k = private_redis.client(), str(tmp_path), ns.keys
    cut_host, other_host = network.add_host(), network.add_host()

    # A alone takes the three held jobs (they wait for the release file), then B starts.
    a = start_host_worker(cut_host)
    a_id = str(wait_for(lambda: identity_of(c, ns, a.pid), 30, "worker A registered"))
    jids = [
        partition_jobs.held.enqueue(d, "cut-ack", False),
        partition_jobs.held.enqueue(d, "cut-retry", True),
        partition_jobs.held_fragile.enqueue(d, "cut-dead"),
    ]
    wait_for(lambda: set(runs(d)) == set(HELD), 20, "A running the three held jobs")
    b = start_host_worker(other_host)
    wait_for(lambda: identity_of(c, ns, b.pid), 30, "worker B registered")

    # A is busy with exactly the held jobs (-c 3), so it fetches nothing until they end.
    assert sorted(json.loads(p)["jid"] for p in c.lrange(k.working(a_id), 0, -1)) == sorted(map(str, jids))
    (tmp_path / CUT).write_text(cut_host.name)
    cut_host.cut()
    cut_at = time.monotonic()
    (tmp_path / RELEASE).touch()
    for name in BACKGROUND:
        partition_jobs.quick.enqueue(d, name, 0.3)

    wait_for(lambda: not c.sismember(k.processes, a_id), 20, "B adopting A's jobs once A's heartbeat expired")
    adopted_after = time.monotonic() - cut_at
    wait_for(lambda: ended(d, HELD, other_host.name) and ended(d, BACKGROUND), 30, "B running every job")
    wait_for(lambda: all(len(e) == 2 for h, e in sum(runs(d).values(), []) if h == cut_host.name), 10, "A's runs")
    assert c.llen(k.working(a_id)) == 0
    a_out = a.output()
    assert a.proc.poll() is None, a_out[-3000:]
    (tmp_path / CUT).unlink()
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))  # the outage itself, not a synchronisation
    cut_host.restore()
    cut_for = time.monotonic() - cut_at
    restored_wall, restored = time.time(), time.monotonic()
    wait_for(lambda: beat_at(c, ns, a_id) > restored_wall, 60, "A's heartbeat back")
    back_after = time.monotonic() - restored
    assert identity_of(c, ns, a.pid) == a_id  # the same identity registers again

    # A goes on working: with B stopped, A runs the new jobs. A fetch A sent during the cut and gave up on (read
    # timeout) must not reach Redis once the link is back ("ghost" fetch: jobs moved into A's working list that
    # no greenlet of A runs); connect.py closes connections with SO_LINGER 0 so the kernel drops it.
    assert b.stop() == 0
    for name in AFTER:
        partition_jobs.quick.enqueue(d, name, 0.1)

    def after_settled() -> bool:
        held = {json.loads(p)["args"][1] for p in c.lrange(k.working(a_id), 0, -1)}
        ran = {n for n in AFTER if ended(d, (n,), cut_host.name)}
        return c.llen(k.queue("default")) == 0 and bool(ran) and ran | held == set(AFTER)

    wait_for(after_settled, 30, "A running the jobs enqueued after it came back")
    assert a.stop() == 0  # writes every outcome still pending (the stale ones too), puts back what it holds
    ghosts = {json.loads(p)["args"][1] for p in c.lrange(k.queue("default"), 0, -1)}

    found = runs(d)
    counts = {name: len(rs) for name, rs in found.items()}
    a_ends = {n: e[-1] for n, rs in found.items() for h, e in rs if h == cut_host.name and n in HELD}
    print(
        f"\npartition: A cut off for {cut_for:.1f}s, its jobs adopted {adopted_after:.1f}s after the cut, "
        f"heartbeat back {back_after:.1f}s after the link; {sum(counts.values())} runs of {len(counts)} jobs, "
        f"{sum(n - 1 for n in counts.values())} duplicates; {len(ghosts)} job(s) taken by a ghost fetch"
    )
    # Nothing lost (every job ran, or was put back by A's stop); only the jobs A held at the cut ran twice:
    # once on A, once on B.
    assert ghosts == set(), f"jobs taken by a fetch given up on during the cut: {sorted(ghosts)}"
    assert set(counts) == {*HELD, *BACKGROUND, *AFTER} and ended(d, tuple(counts))
    assert {n for n, count in counts.items() if count > 1} == set(HELD)
    assert all(counts[n] == 2 for n in HELD) and all(counts[n] == 1 for n in set(BACKGROUND + AFTER))
    assert a_ends == {"cut-ack": "ok", "cut-retry": "fail", "cut-dead": "fail"}
    # A's late outcomes (done, retry, dead) changed nothing: the jobs were no longer in its working list.
    assert c.zcard(k.retry) == c.zcard(k.dead) == c.zcard(k.schedule) == 0
    assert [key for key in c.scan_iter(k.working("*")) if c.llen(key)] == []
    assert f"process {a_id} died holding 3 job(s)" in b.output()
    assert "outcome(s) not written: this process no longer holds those jobs" in a.output()
