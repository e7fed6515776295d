"""Processes: a worker's process tree (sampled, then killed) and each system's module and enqueuer command."""

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def system_module(system: str) -> ModuleType:
    """benchmarks/sys_<system>.py (a dash in the name is an underscore in the module's)."""
    return importlib.import_module(f"benchmarks.sys_{system.replace('-', '_')}")


def system_problem(system: str, workload: str = "noop") -> str | None:
    """Why the system cannot run here at all, or cannot run `workload`; None when it can."""
    try:
        mod = system_module(system)
    except ImportError as exc:
        return f"cannot import ({exc}): pip install -e '.[bench]'"
    return mod.unavailable(workload) if hasattr(mod, "unavailable") else None


def enqueuer_command(system: str, args: Sequence[str]) -> list[str]:
    """The command line of the system's enqueuer process (benchmarks/enqueue.py unless the module has its own)."""
    mod = system_module(system)
    if hasattr(mod, "enqueuer"):
        return mod.enqueuer(args)
    return [sys.executable, "-m", "benchmarks.enqueue", system, *args]


# --- the worker's process tree ------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state, 1 the parent pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """`root` and every descendant (also those that left its process group, as RQ's do)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class TreeSampler(threading.Thread):
    """Samples the RSS and CPU time of a process tree until stopped; keeps the peak RSS."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self.pids: list[int] = [root]
        self.halt = threading.Event()

    def run(self) -> None:
        """Sample every `interval` seconds (the tree's pids refreshed every fifth sample)."""
        n = 0
        while not self.halt.is_set():
            self.sample(refresh=n % 5 == 0)
            n += 1
            self.halt.wait(self.interval)

    def sample(self, refresh: bool = True) -> None:
        """Add up the tree's RSS now and keep each process's CPU time."""
        if refresh:
            self.pids = process_tree(self.root)
        rss = 0
        for pid in self.pids:
            fields = _stat(pid)
            if fields and fields[0] != "Z":
                rss += int(fields[21]) * PAGE
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / TICK)
        self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> float:
        """Stop sampling; returns the CPU seconds used by the tree."""
        self.halt.set()
        self.join()
        self.sample()
        return sum(self.cpu.values())


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and all its descendants (the measurement is over; nothing needs to be clean)."""
    for pid in reversed(process_tree(proc.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


def start_bench_worker(
    module: str,
    url: str,
    env: dict[str, str],
    client: Any,
    keys: Any,
    queue: str,
    namespace: str,
    concurrency: int,
    extra: Sequence[str] = (),
) -> "tuple[subprocess.Popen[bytes], str]":
    """One `gjiggler worker -r module` on `queue` (`extra`: more options); returns it and its working list once it
    idles on the queue."""
    argv = [sys.executable, "-m", "jiggler_gevent", "worker", "-r", module, "-q", queue]
    argv += ["-c", str(concurrency), "--redis-url", url, "--namespace", namespace, *extra]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not client.smembers(keys.processes):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start (exit code {proc.poll()})")
        time.sleep(0.05)
    identity = next(iter(client.smembers(keys.processes)))
    time.sleep(1.0)  # its first beat written, blocked in its fetch on the empty queue
    return proc, keys.working(identity)


def stop_bench_worker(proc: "subprocess.Popen[bytes]") -> None:
    """SIGTERM, then the whole tree killed if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
