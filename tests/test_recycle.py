"""Worker recycling: `gjiggler worker --max-jobs N --max-memory MB` replaces a process past either limit.

The replaced process stops gracefully (quiet, finish or put back, exit 0), the supervisor logs why and starts a
fresh one at once; every job runs exactly once.
"""

import os
import re

from jiggler_gevent.contrib.django import conf as django_conf
from jiggler_gevent.server.supervisor import read_report, report_pipe
from tests import jobs, recycle_jobs
from tests.conftest import held_jobs, wait_for

RESTART = re.compile(r"worker process (\d+) stopped: (.+); starting a fresh one")


def restarts(output: str) -> list[tuple[int, str]]:
    """(pid, reason) of every restart the supervisor logged."""
    return [(int(pid), reason) for pid, reason in RESTART.findall(output)]


def runs_per_token(r, key: str) -> dict[str, int]:
    return {token: int(n) for token, n in r.hgetall(key).items()}


def runs_per_pid(r, key: str) -> dict[int, int]:
    return {int(pid): int(n) for pid, n in r.hgetall(key + ":pids").items()}


def enqueue_counts(key: str, tokens: range) -> None:
    recycle_jobs.count.enqueue_bulk([(key, str(t)) for t in tokens])


def assert_each_ran_once(r, key: str, tokens: range) -> None:
    wait_for(lambda: r.hlen(key) == len(tokens), 60, f"{len(tokens)} jobs run")
    runs = runs_per_token(r, key)
    assert set(runs) == {str(t) for t in tokens}
    assert set(runs.values()) == {1}


def test_max_jobs_100_over_1000_jobs_restarts_the_process_10_times_and_runs_each_job_once(ns, r, tkey, start_worker):
    # No -p: the limit brings a supervisor with one child, as Celery's limits do with a pool of any size.
    w = start_worker("-r", "tests.recycle_jobs", "-c", "5", "--max-jobs", "100")
    key = tkey("runs")
    enqueue_counts(key, range(1000))
    assert_each_ran_once(r, key, range(1000))
    wait_for(lambda: len(restarts(w.output())) == 10, 30, "10 restarts logged")
    done = restarts(w.output())
    assert {reason for _, reason in done} == {"max jobs reached (100 jobs)"}
    per_pid = runs_per_pid(r, key)
    assert len({pid for pid, _ in done}) == 10
    assert {pid: per_pid[pid] for pid, _ in done} == {pid: 100 for pid, _ in done}  # exactly 100 taken each
    assert sum(per_pid.values()) == 1000
    wait_for(lambda: r.scard(ns.keys.processes) == 1, 20, "the 11th process running")
    assert held_jobs(r, ns) == 0 and r.llen(ns.keys.queue("default")) == 0
    assert w.stop() == 0
    out = w.output()
    assert "exited with code" not in out  # each replaced child exited 0, so no crash was logged
    assert len(restarts(out)) == 10


def test_max_jobs_with_two_processes_each_replaced_process_took_exactly_the_limit(ns, r, tkey, start_worker):
    w = start_worker("-r", "tests.recycle_jobs", "-p", "2", "-c", "4", "--max-jobs", "60")
    key = tkey("runs")
    enqueue_counts(key, range(240))
    assert_each_ran_once(r, key, range(240))
    per_pid = runs_per_pid(r, key)
    # The last 60 may be split between the two live processes, so 3 or 4 restarts: never a process past 60.
    expected = sum(1 for n in per_pid.values() if n == 60)
    wait_for(lambda: len(restarts(w.output())) == expected, 30, f"{expected} restarts logged")
    assert expected in (3, 4) and max(per_pid.values()) == 60 and sum(per_pid.values()) == 240
    assert {per_pid[pid] for pid, _ in restarts(w.output())} == {60}
    assert w.stop() == 0
    assert "exited with code" not in w.output()


def test_max_memory_replaces_the_process_past_the_limit_and_no_job_is_lost(ns, r, tkey, start_worker):
    w = start_worker("-r", "tests.recycle_jobs", "-c", "2", "--max-memory", "150")
    key, hogged = tkey("runs"), tkey("hog")
    recycle_jobs.hog.enqueue(hogged, 200)
    enqueue_counts(key, range(20))
    wait_for(lambda: restarts(w.output()), 30, "a restart logged")
    [(pid, reason)] = restarts(w.output())
    match = re.fullmatch(r"RSS (\d+) MB over 150 MB", reason)
    assert match and int(match.group(1)) > 150
    assert r.lrange(hogged, 0, -1) == [str(pid)]
    enqueue_counts(key, range(20, 40))
    assert_each_ran_once(r, key, range(40))
    assert r.hget(key + ":pids", str(pid)) != str(40)  # the last 20 ran in the fresh process
    assert len(restarts(w.output())) == 1  # the fresh process stays under the limit
    assert w.stop() == 0
    assert "exited with code" not in w.output()
    assert held_jobs(r, ns) == 0


def test_a_job_longer_than_the_shutdown_timeout_is_put_back_and_runs_in_the_next_process(ns, r, tkey, start_worker):
    w = start_worker("-r", "tests.recycle_jobs", "-c", "2", "--max-jobs", "2", "-t", "0.3")
    key = tkey("nap")
    jobs.started_then_nap.enqueue_bulk([(key, 1.5), (key, 0.0)])  # the first outlasts the 0.3 s timeout
    wait_for(lambda: restarts(w.output()), 30, "a restart logged")
    [(first, reason)] = restarts(w.output())
    assert reason == "max jobs reached (2 jobs)"
    wait_for(lambda: r.llen(key + ":finished") == 2, 30, "both jobs finished")
    started = [int(p) for p in r.lrange(key + ":started", 0, -1)]
    finished = [int(p) for p in r.lrange(key + ":finished", 0, -1)]
    assert started.count(first) == 2 and len(started) == 3  # the long one was put back and started again
    assert finished.count(first) == 1 and finished[-1] != first  # ... and finished in the fresh process
    assert "put 1 unfinished job(s) back" in w.output()
    assert w.stop() == 0
    assert "exited with code" not in w.output()


def test_report_pipe_carries_the_reason_and_is_empty_otherwise():
    reader, writer = report_pipe()
    os.write(writer, b"max jobs reached (1 jobs)")
    os.close(writer)
    assert read_report(reader) == "max jobs reached (1 jobs)"
    reader, writer = report_pipe()
    try:
        assert read_report(reader) is None  # nothing written, writer still open: no blocking
    finally:
        os.close(writer)


def test_django_settings_mirror_the_limits():
    args = django_conf.worker_args({"MAX_JOBS": 100, "MAX_MEMORY": 150, "PROCESSES": 2}, [])
    assert args == ["--processes=2", "--max-memory=150", "--max-jobs=100"]
    assert django_conf.worker_args({"MAX_JOBS": 100}, ["--max-jobs", "5"]) == ["--max-jobs", "5"]
