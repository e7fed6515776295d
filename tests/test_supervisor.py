"""`gjiggler worker -p N`: N real worker processes under one supervisor, restarts, recovery and signals."""

import dataclasses
import json
import os
import signal
import time

import pytest

from jiggler_gevent.cli import worker as worker_command
from jiggler_gevent.options import WorkerOptions
from jiggler_gevent.server import supervisor
from tests import jobs
from tests.conftest import wait_for


def pid_of(identity: str) -> int:
    return int(identity.split(":")[1])


def child_pids(r, ns) -> set:
    return {pid_of(i) for i in r.smembers(ns.keys.processes)}


def children(r, ns, killed: int | None = None, supervisor: int | None = None) -> set:
    """The two worker processes' pids, in one read (a killed one's entry goes before its replacement's comes), when
    there are two and `killed` is not among them; else an empty set. While it recovers a killed child's jobs, the
    supervisor lists itself too (supervisor.py's _recover): pass its pid to leave it out."""
    pids = child_pids(r, ns) - {supervisor}
    return pids if len(pids) == 2 and killed not in pids else set()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cmdline(pid: int) -> list:
    with open(f"/proc/{pid}/cmdline") as f:
        return f.read().split("\0")[:-1]


def held_jobs(r, ns) -> int:
    return sum(r.llen(k) for k in r.scan_iter(ns.keys.working("*")))


def test_child_command_gives_the_supervisors_options_for_one_process_and_backoff_grows():
    opts = WorkerOptions(
        requires=("tests.jobs",),
        concurrency=5,
        queues=(("mail", 3), ("low", 1)),
        strict=True,
        processes=4,
        preempt=0.05,
        django=True,
        namespace="ns",
        redis_url="redis://h:1/2",
    )
    command = supervisor.child_command(opts)
    assert command[1:4] == ["-m", "jiggler_gevent", "worker"]
    parsed = worker_command.make_context("worker", command[4:]).params
    assert WorkerOptions(**parsed) == dataclasses.replace(opts, processes=1)
    delays = [supervisor.backoff(n) for n in range(1, 12)]
    assert delays[0] == 0.0 and delays[1] > 0
    assert delays == sorted(delays) and delays[-1] == supervisor.MAX_BACKOFF


def test_jobs_run_in_two_distinct_child_processes(ns, r, start_worker):
    w = start_worker("-p", "2", "-c", "3")
    pids = wait_for(lambda: children(r, ns), 20, "two worker processes")
    assert w.pid not in pids
    assert {parent_of(p) for p in pids} == {w.pid}
    key = f"{ns.namespace}:t:naps"
    jobs.nap.enqueue_bulk([(key, 0.1)] * 40)
    wait_for(lambda: r.llen(key) == 40, 30, "40 naps")
    assert {int(p) for p in r.lrange(key, 0, -1)} == pids
    assert w.stop() == 0
    assert r.scard(ns.keys.processes) == 0
    assert not any(alive(p) for p in pids)


def test_sigkill_of_a_child_restarts_it_and_recovers_its_jobs_at_once(ns, r, start_worker):
    w = start_worker("-p", "2", "-c", "5")
    wait_for(lambda: children(r, ns), 20, "two worker processes")
    key = f"{ns.namespace}:t:held"
    jobs.started_then_nap.enqueue_bulk([(key, 2.0)] * 10)
    wait_for(lambda: r.llen(key + ":started") == 10, 20, "10 jobs started (5 per process)")
    first = child_pids(r, ns)
    victim = int(r.lindex(key + ":started", 0))
    survivor = (first - {victim}).pop()
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    now = wait_for(lambda: children(r, ns, killed=victim, supervisor=w.pid), 20, "a replacement process")
    replacement = (now - {survivor}).pop()
    assert replacement != victim and parent_of(replacement) == w.pid
    # The first children were forked from the supervisor (its command line); the replacement is a fresh one.
    assert cmdline(survivor) == cmdline(w.pid)
    assert cmdline(replacement)[1:4] == ["-m", "jiggler_gevent", "worker"] and "--processes=1" in cmdline(replacement)
    assert "--concurrency=5" in cmdline(replacement) and "--require=tests.jobs" in cmdline(replacement)
    # Five jobs finish in the survivor, the victim's five are run again: well before the 60 s heartbeat TTL.
    wait_for(lambda: r.llen(key + ":finished") == 10, 40, "every job finished, the killed ones re-run")
    assert time.monotonic() - killed_at < 40
    finished_by = [int(p) for p in r.lrange(key + ":finished", 0, -1)]
    assert victim not in finished_by
    assert r.llen(key + ":started") == 15
    wait_for(lambda: held_jobs(r, ns) == 0, 10, "every acknowledgement written")
    assert r.llen(ns.keys.queue("default")) == 0
    assert w.stop() == 0
    assert r.scard(ns.keys.processes) == 0


def test_sigterm_stops_every_child_and_puts_unfinished_jobs_back(ns, r, start_worker):
    w = start_worker("-p", "2", "-c", "3", "-t", "1")
    pids = wait_for(lambda: children(r, ns), 20, "two worker processes")
    key = f"{ns.namespace}:t:long"
    jids = set(jobs.started_then_nap.enqueue_bulk([(key, 60)] * 6))
    wait_for(lambda: r.llen(key + ":started") == 6, 20, "6 jobs started")
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    assert not any(alive(p) for p in pids)
    queued = r.lrange(ns.keys.queue("default"), 0, -1)
    assert {json.loads(raw)["jid"] for raw in queued} == jids
    assert held_jobs(r, ns) == 0
    assert r.scard(ns.keys.processes) == 0
    assert r.llen(key + ":finished") == 0


def test_a_second_sigterm_stops_the_children_at_once(ns, r, start_worker):
    w = start_worker("-p", "2", "-c", "2", "-t", "120")
    wait_for(lambda: children(r, ns), 20, "two worker processes")
    key = f"{ns.namespace}:t:long"
    jobs.started_then_nap.enqueue_bulk([(key, 120)] * 4)
    wait_for(lambda: r.llen(key + ":started") == 4, 20, "4 jobs started")
    w.signal(signal.SIGTERM)
    wait_for(lambda: w.output().count("stopping: waiting") == 2, 20, "both children stopping")
    signalled = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0
    assert time.monotonic() - signalled < 30
    assert r.llen(ns.keys.queue("default")) == 4
    assert held_jobs(r, ns) == 0


def beats(r, ns) -> dict:
    infos = {i: r.hget(ns.keys.process(i), "info") for i in r.smembers(ns.keys.processes)}
    return {i: json.loads(v) for i, v in infos.items() if v}


def test_sigtstp_is_forwarded_and_quiets_every_child(ns, r, start_worker):
    w = start_worker("-p", "2", "-c", "2")
    wait_for(lambda: children(r, ns), 20, "two worker processes")
    w.signal(signal.SIGTSTP)
    quiet = lambda seen: len(seen) == 2 and all(b["quiet"] for b in seen.values())  # noqa: E731
    wait_for(lambda: quiet(beats(r, ns)), 20, "both children heartbeating quiet")
    key = f"{ns.namespace}:t:after-quiet"
    jobs.record.enqueue(key, "x")
    pushed = time.time()
    wait_for(lambda: all(b["beat"] > pushed for b in beats(r, ns).values()), 20, "a heartbeat after the push")
    assert r.llen(key) == 0 and r.llen(ns.keys.queue("default")) == 1
    assert w.proc.poll() is None
    assert w.stop() == 0


def test_a_usage_error_in_the_children_stops_the_supervisor_with_code_2(ns, start_worker):
    w = start_worker("-p", "2", "-r", "no_such_module_for_jiggler_tests")
    assert w.proc.wait(60) == 2
    assert "no_such_module_for_jiggler_tests" in w.output()


@pytest.mark.parametrize("processes", [["-p", "2"], []], ids=["p2", "p1"])
def test_a_module_that_raises_at_import_shows_its_error_once_and_stops_the_worker(ns, r, start_worker, processes):
    w = start_worker(*processes, "-r", "tests.raising_jobs")
    assert w.proc.wait(30) == 2  # under -p it used to restart the children forever, a traceback each time
    out = w.output()
    assert out.count("gjiggler: error: -r/--require tests.raising_jobs: importing it raised RuntimeError") == 1, out
    assert out.count("Traceback") == 1 and 'raising_jobs.py", line' in out, out  # the module's frames, once
    assert "restarting" not in out and "failed to start" not in out
    assert r.scard(ns.keys.processes) == 0


def test_children_stop_cleanly_when_the_supervisor_is_killed(ns, r, start_worker):
    w = start_worker("-p", "2")
    pids = wait_for(lambda: children(r, ns), 20, "two worker processes")
    w.kill()
    wait_for(lambda: not any(alive(p) for p in pids), 30, "the orphaned children to stop")
    assert r.scard(ns.keys.processes) == 0
