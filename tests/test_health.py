"""`gjiggler worker --health-port`: /health and /ready of real worker processes, one process and -p 2."""

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from jiggler_gevent.server.health import Vitals, liveness, readiness
from tests import jobs
from tests.conftest import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, dict]:
    """(status, JSON body) of GET `path`; (0, {}) when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def answer(port: int, path: str, status: int, timeout: float = 20, until=lambda body: True) -> dict:
    """Poll `path` until it answers `status` with a body that satisfies `until`; that body."""

    def attempt() -> dict | None:
        code, body = get(port, path)
        return body if code == status and until(body) else None

    return wait_for(attempt, timeout, f"{path} answering {status} on port {port}", interval=0.1)  # type: ignore[return-value]


# -- the judgement, on records ----------------------------------------------------------------------------------


def record(**changes: object) -> Vitals:
    base = {"pid": 7, "written_at": 100.0, "hub_pass_at": 100.0, "heartbeat_ttl": 60.0}
    return Vitals(**{**base, **changes})  # type: ignore[arg-type]


def test_liveness_names_a_blocked_hub_a_silent_process_and_a_heartbeat_failing_past_its_ttl():
    assert liveness([record()], now=101.0, blocked=30)[0] is True
    ok, body = liveness([record(hub_pass_at=60.0)], now=101.0, blocked=30)
    assert not ok and body["status"] == "unhealthy" and "hub has not switched for 41.0s" in body["reasons"][0]
    ok, body = liveness([record(written_at=50.0, hub_pass_at=50.0)], now=101.0, blocked=30)
    assert not ok and any("no report for 51.0s" in r for r in body["reasons"])
    assert liveness([record(heartbeat_failing_since=50.0)], now=101.0, blocked=30)[0] is True  # within its TTL
    ok, body = liveness([record(heartbeat_failing_since=30.0)], now=101.0, blocked=30)
    assert not ok and "heartbeat has not reached Redis for 71.0s" in body["reasons"][0]
    ok, body = liveness([], now=101.0, blocked=30)
    assert ok and body["status"] == "starting", "a liveness probe must not kill a worker that is starting"
    ok, body = liveness([record(pid=1), record(pid=2, hub_pass_at=0.0)], now=101.0, blocked=30)
    assert (
        not ok and [p["ok"] for p in body["processes"]] == [True, False] and body["reasons"][0].startswith("process 2")
    )


def test_readiness_is_refused_while_quiet_stopping_cut_off_or_before_any_process_reported():
    assert readiness([record()], now=101.0, blocked=30)[0] is True
    assert readiness([record(quiet=True)], now=101.0, blocked=30)[1]["reasons"] == [
        "process 7: quiet: it fetches no new jobs"
    ]
    assert readiness([record(stopping=True, quiet=True)], now=101.0, blocked=30)[1]["reasons"] == [
        "process 7: stopping"
    ]
    ok, body = readiness([record(fetch_failing_since=99.0)], now=101.0, blocked=30)
    assert not ok and "Redis has not answered its fetch for 2.0s" in body["reasons"][0]
    assert readiness([record(heartbeat_failing_since=100.5)], now=101.0, blocked=30)[0] is False
    assert readiness([], now=101.0, blocked=30)[1]["reasons"] == ["no worker process has reported yet"]
    ok, body = readiness([record()], now=101.0, blocked=30, stopping=True)
    assert not ok and body["reasons"] == ["the worker is stopping"]


# -- real workers ----------------------------------------------------------------------------------------------


def test_health_turns_503_while_a_job_blocks_the_hub_and_200_after_and_ready_follows_quiet(start_worker, tkey):
    port = free_port()
    w = start_worker("-c", "2", "--health-port", str(port), "--health-host", "127.0.0.1", "--health-blocked", "1")
    assert answer(port, "/health", 200)["status"] == "ok"
    assert answer(port, "/ready", 200)["processes"][0]["pid"] == w.pid
    jobs.block_hub.enqueue(tkey("blocked"), "sleep", 4.0)  # an unpatched sleep: releases the GIL, holds the hub
    body = answer(port, "/health", 503)
    assert body["status"] == "unhealthy" and "its hub has not switched" in body["reasons"][0], body
    assert body["processes"][0]["busy"] == 1
    answer(port, "/health", 200)  # the job ended: the hub switches again
    assert get(port, "/nothing")[0] == 404
    w.signal(signal.SIGTSTP)
    body = answer(port, "/ready", 503)
    assert body["reasons"] == [f"process {w.pid}: quiet: it fetches no new jobs"], body
    assert get(port, "/health")[0] == 200, "a quiet worker is alive"
    assert w.stop() == 0
    assert get(port, "/health") == (0, {}), "the port is closed once the worker has stopped"


def test_two_processes_answer_on_one_port_and_a_blocked_child_is_named(start_worker, r, ns, tkey):
    port = free_port()
    w = start_worker("-p", "2", "-c", "2", "--health-port", str(port), "--health-blocked", "1")

    ready = answer(port, "/ready", 200, timeout=30, until=lambda body: len(body["processes"]) == 2)
    pids = {p["pid"] for p in ready["processes"]}
    assert w.pid not in pids, "the children report; the supervisor serves"
    jobs.block_hub.enqueue(tkey("blocked"), "sleep", 4.0)
    body = answer(port, "/health", 503)
    blocked = [p for p in body["processes"] if not p["ok"]]
    assert len(blocked) == 1 and blocked[0]["pid"] in pids and len(body["processes"]) == 2, body
    answer(port, "/health", 200)
    w.signal(signal.SIGTSTP)  # forwarded to both children
    body = answer(port, "/ready", 503, until=lambda body: len(body["reasons"]) == 2)
    assert all("quiet" in reason for reason in body["reasons"]), body
    assert w.stop() == 0


def test_ready_is_refused_while_redis_is_unreachable_and_given_back_when_it_answers(redis_server, worker_at):
    server = redis_server()
    port = free_port()
    worker_at(server.url, "-c", "2", "--health-port", str(port), "--heartbeat-interval", "0.5")
    answer(port, "/ready", 200)
    server.kill()
    body = answer(port, "/ready", 503)
    assert any("Redis" in reason for reason in body["reasons"]), body
    assert get(port, "/health")[0] == 200, "an outage shorter than the heartbeat's TTL is not a reason to restart"
    server.start()
    answer(port, "/ready", 200, timeout=40)


def test_a_taken_health_port_is_a_usage_error(ns):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for extra in ([], ["-p", "2"]):
            done = subprocess.run(
                [sys.executable, "-m", "jiggler_gevent", "worker", "-r", "tests.jobs", "--redis-url", ns.url]
                + ["--namespace", ns.namespace, "--health-port", str(port), "--health-host", "127.0.0.1", *extra],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 2, (extra, done.stderr[-2000:])
            assert f"--health-port {port} on 127.0.0.1: cannot listen" in done.stderr, done.stderr[-2000:]
