"""The switcher (server/preempt.py) and safe points (server/safepoints.py): a CPU-bound job no longer stops the
ticker, the heartbeat or the other jobs, and an exception thrown into it lands only in the user's code.

The pytest process is not gevent-patched, so everything that runs a switcher runs in a subprocess: a
`gjiggler worker` (start_worker) or a small patched script. Timing bounds are generous hang detectors:
the machine is shared, and the benchmark (benchmarks/bench_preempt.py) is where figures come from.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from jiggler_gevent import config
from jiggler_gevent.server import safepoints
from jiggler_gevent.server.preempt import PassCounter, resolve_threshold
from tests import jobs
from tests.conftest import ROOT, heartbeat_times, wait_for


def _key(ns: config.Config, name: str) -> str:
    return f"{ns.namespace}:{name}:{uuid.uuid4().hex[:6]}"


def _ticker_beside_hogs(r, ns, start_worker, hogs: int, *worker_args: str, hog_seconds: float = 3.0) -> float:
    """Worst gap of a 0.05 s ticker job while `hogs` jobs burn CPU for `hog_seconds` beside it."""
    worker = start_worker("-c", str(hogs + 2), *worker_args)
    key = _key(ns, "ticker")
    jobs.ticker.enqueue(key, hog_seconds + 1.0)
    wait_for(lambda: r.llen(key + ":started"), 30, "the ticker to start")
    for i in range(hogs):
        jobs.cpu_hog.enqueue(f"{key}:hog{i}", hog_seconds)
    wait_for(lambda: r.llen(key), hog_seconds * (hogs + 1) + 20, "the ticker to finish")
    for i in range(hogs):
        assert r.llen(f"{key}:hog{i}:started") == 1, worker.output()
    return json.loads(r.lindex(key, 0))["worst"]


def test_one_cpu_hog_leaves_the_ticker_its_time(r, ns, start_worker):
    worst = _ticker_beside_hogs(r, ns, start_worker, 1)
    # starved, the ticker would wait the hog's 3 s (the next test); the bound leaves room for a loaded machine
    assert worst < 1.5, f"worst ticker gap {worst:.3f}s with the default threshold"


def test_without_preemption_the_hog_starves_the_ticker(r, ns, start_worker):
    worst = _ticker_beside_hogs(r, ns, start_worker, 1, "--preempt", "0")
    assert worst > 1.5, f"worst ticker gap {worst:.3f}s with --preempt 0: the test would not show the switcher helps"


def test_five_hogs_at_once_still_leave_the_ticker_its_time(r, ns, start_worker):
    worst = _ticker_beside_hogs(r, ns, start_worker, 5, "--preempt", "0.1")
    # a turn of the five hogs is 0.5 s at 0.1 s each; starved, the ticker would wait 3 s or more
    assert worst < 2.0, f"worst ticker gap {worst:.3f}s with 5 hogs"


@pytest.mark.parametrize("preempt, bound", [("0.1", None), ("0", 2.0)])
def test_heartbeat_keeps_its_interval_while_hogs_run(r, ns, start_worker, preempt, bound):
    interval, threshold = 0.5, 0.1
    worker = start_worker("-c", "4", "--heartbeat-interval", str(interval), "--preempt", preempt)
    wait_for(lambda: r.smembers(ns.keys.processes), 20, "the worker's first heartbeat")
    key = _key(ns, "hb")
    for i in range(2):
        jobs.cpu_hog.enqueue(f"{key}:{i}", 4.0)
    wait_for(lambda: r.llen(f"{key}:0:started") and r.llen(f"{key}:1:started"), 20, "the hogs to start")
    beats = heartbeat_times(r, ns, 3.5)
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    if bound is None:
        # Its sleep (interval +-10%), at most one threshold before it runs, and a margin: the Monitor
        # sleeps *after* its beat and its recovery sweep, whose round trips each wait for a loop pass
        # (up to a threshold and a bit while hogs run), and the machine is shared.
        assert len(gaps) >= 2, (beats, worker.output())
        assert max(gaps) < interval * 1.1 + threshold + 1.0, gaps
    else:
        assert not gaps or max(gaps) > bound, f"without the switcher the heartbeat should stall: {gaps}"


@pytest.mark.parametrize("kind", ["gil", "sleep", "pg"])
def test_what_cannot_be_preempted_is_reported_with_the_job_name(r, ns, start_worker, kind):
    worker = start_worker("-c", "2")
    key = _key(ns, "block")
    jobs.block_hub.enqueue(key, kind, 1.0)
    wait_for(lambda: r.llen(key), 30, f"the {kind} job to finish")

    def reported():
        lines = [ln for ln in worker.output().splitlines() if "held the hub for" in ln]
        return lines

    lines = wait_for(reported, 10, "the report of a blocked hub")
    line = lines[0]
    assert "job tests.jobs.block_hub (jid " in line, line
    held = float(line.split("held the hub for ")[1].split("s ")[0])
    assert 0.5 <= held <= 20.0, line  # a 1 s hold: longer in wall time on a loaded machine (5.7 s seen)


def test_io_bound_jobs_are_never_preempted(r, ns, start_worker):
    worker = start_worker("-c", "5")
    key = _key(ns, "io")
    for _ in range(10):
        jobs.nap.enqueue(key, 0.3)
    wait_for(lambda: r.llen(key) == 10, 30, "the naps")
    time.sleep(0.5)  # idle, so the loop sits in its poll past the threshold: that is not a hog
    assert worker.stop() == 0
    out = worker.output()
    assert "switcher stopped: 0 forced yield(s)" in out, out[-2000:]
    assert "held the hub" not in out


# -- in a patched subprocess --------------------------------------------------------------------------

HARNESS = """
from jiggler_gevent.patch import patch
patch()
import json, os, sys, time
import gevent
from jiggler_gevent.server.preempt import Switcher

def worst_gap(hog_seconds):
    gaps = []
    def ticker():
        last = time.monotonic()
        while True:
            gevent.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
    def hog():
        end = time.monotonic() + hog_seconds
        while time.monotonic() < end:
            pass
    t = gevent.spawn(ticker)
    gevent.sleep(0.2)
    gevent.spawn(hog).join()
    gevent.sleep(0.2)
    t.kill()
    return max(gaps)
"""


def _run_patched(body: str, timeout: float = 60) -> dict:
    """Run HARNESS + body as a script file (a real file: code named "<string>" never counts as the user's)."""
    script = ROOT / "test-artifacts" / f"switcher-harness-{uuid.uuid4().hex[:8]}.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(HARNESS + textwrap.dedent(body))
    try:
        out = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        script.unlink()
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_switcher_is_restarted_in_a_forked_child():
    result = _run_patched("""
        s = Switcher(0.1)
        s.start()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            os.write(write, json.dumps({"child": worst_gap(2.0)}).encode())
            os._exit(0)
        os.close(write)
        child = json.loads(os.read(read, 1000))
        os.waitpid(pid, 0)
        print(json.dumps(dict(child, parent=worst_gap(2.0))))
    """)
    # a hog not cut holds the hub its whole 2 s; cut every 0.1 s, the gaps stay far below 1 s even on a loaded machine
    assert result["child"] < 1.0, result
    assert result["parent"] < 1.0, result


def test_stop_ends_the_thread_and_restores_the_signal():
    result = _run_patched("""
        import signal
        def threads():
            return len(os.listdir("/proc/self/task"))
        before = threads()
        s = Switcher(0.1)
        s.start()
        during = threads()
        s.stop()
        end = time.monotonic() + 5  # the thread has released its lock; the OS may list it a moment longer
        while threads() != before and time.monotonic() < end:
            time.sleep(0.01)
        after = threads()
        print(json.dumps({"before": before, "during": during, "after": after,
                          "default_handler": signal.getsignal(signal.SIGURG) == signal.SIG_DFL,
                          "gap_after_stop": worst_gap(0.6)}))
    """)
    assert result["during"] == result["before"] + 1, result
    assert result["after"] == result["before"], result
    assert result["default_handler"] is True, result
    assert result["gap_after_stop"] > 0.5, result  # stopped means stopped: the hog is not cut any more


@pytest.mark.xfail(
    sys.version_info[:2] == (3, 13),
    reason="CPython 3.13: an exception raised by a signal handler in a loop can skip the loop's try/except, with "
    "or without gevent, depending on the instruction it lands on (python/cpython#108214); docs/preemption.md",
    strict=False,  # seen both ways on 3.13.0: 6 of 6 runs failed in one session, the next CI run passed
)
def test_a_user_gevent_timeout_in_cpu_code_lands_in_the_users_code():
    result = _run_patched("""
        s = Switcher(0.05)
        s.start()
        def spin():
            with gevent.Timeout(0.2) as t:
                try:
                    end = time.monotonic() + 3
                    while time.monotonic() < end:
                        pass
                except gevent.Timeout as exc:
                    return exc is t
            return None
        t0 = time.monotonic()
        caught = gevent.spawn(spin).get()
        print(json.dumps({"caught": caught, "elapsed": time.monotonic() - t0}))
    """)
    assert result["caught"] is True, result
    assert result["elapsed"] < 2.5, result  # a spin the timeout did not cut runs its whole 3 s


# -- plain units (no hub involved) ------------------------------------------------------------------------


def test_threshold_comes_from_the_option_then_configure_then_the_default(ns):
    assert resolve_threshold(None) == config.DEFAULT_PREEMPT
    config.configure(preempt=0.05)
    assert resolve_threshold(None) == 0.05
    assert resolve_threshold(0.2) == 0.2
    assert resolve_threshold(0) == 0.0
    for bad in (-1, "fast", float("nan"), True):
        config.configure(preempt=bad)
        with pytest.raises(ValueError, match="preempt"):
            resolve_threshold(None)


def test_pass_counter_counts_from_any_thread():
    counter = PassCounter()
    for _ in range(5):
        counter.tick()
    values = []
    t = threading.Thread(target=lambda: values.append(counter.value))
    t.start()
    t.join()
    assert values == [5] and counter.value == 5


def _boundary(fn):
    return fn()


def test_code_map_tells_user_code_from_libraries_and_gevent():
    import json as json_mod
    import logging

    import gevent.util

    examples = jiggler_gevent_examples_file()  # registers jobs inside the package's own folder
    code_map = safepoints.CodeMap()
    assert code_map.kind(__file__) == safepoints.USER
    assert code_map.kind(jobs.__file__) == safepoints.USER
    assert code_map.kind(examples) == safepoints.USER
    assert code_map.kind(logging.__file__) == safepoints.LIBRARY
    assert code_map.kind(safepoints.__file__) == safepoints.LIBRARY
    assert code_map.kind(pytest.__file__) == safepoints.LIBRARY
    assert code_map.kind(gevent.util.__file__) == safepoints.MACHINERY
    assert code_map.kind("<frozen importlib._bootstrap>") == safepoints.LIBRARY

    boundary = _boundary.__code__
    user = _boundary(lambda: sys._getframe())
    assert code_map.scan(user, boundary) == (False, True)
    through_stdlib = _boundary(lambda: json_mod.loads("1", parse_int=lambda s: sys._getframe()))
    assert code_map.scan(through_stdlib, boundary) == (False, False)
    through_gevent = _boundary(lambda: gevent.util.wrap_errors(ValueError, sys._getframe)())
    assert code_map.scan(through_gevent, boundary) == (True, False)
    assert code_map.scan(sys._getframe(), boundary)[1] is False  # no boundary: pytest's frames count


def jiggler_gevent_examples_file() -> str:
    import jiggler_gevent.demo.jobs as example_jobs

    return example_jobs.__file__
