"""`gjiggler worker --metrics-port`: Prometheus metrics of real worker processes, one process and -p 2."""

import os
import signal
import socket
import time
import urllib.request

import pytest

from jiggler_gevent import payload as payload_mod
from tests import jobs
from tests.conftest import ROOT, wait_for
from tests.test_supervisor import child_pids, children

parser = pytest.importorskip("prometheus_client.parser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict:
    """{(sample name, sorted labels): value} of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_when_up(port: int) -> dict:
    def attempt() -> dict | None:
        try:
            return scrape(port)
        except OSError:
            return None

    return wait_for(attempt, 20, f"/metrics on port {port}")  # type: ignore[return-value]


def total(metrics: dict, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def series(metrics: dict, name: str) -> set:
    return {ls for (n, ls), _ in metrics.items() if n == name}


def push_raw(r, ns, queue: str, payloads: list) -> None:
    r.sadd(ns.keys.queues, queue)
    r.lpush(ns.keys.queue(queue), *[payload_mod.encode(p) for p in payloads])


def test_two_processes_serve_one_endpoint_that_counts_what_ran_and_survives_a_killed_child(ns, r, start_worker):
    port = free_port()
    w = start_worker("-p", "2", "-c", "5", "--metrics-port", str(port))
    wait_for(lambda: children(r, ns), 20, "two worker processes")
    key = f"{ns.namespace}:t:metrics"
    jobs.record.enqueue_bulk([(key + ":ok", str(i)) for i in range(12)])
    jobs.always_fail.enqueue_bulk([(key + ":fail",)] * 4)
    jobs.slow_io.enqueue_bulk([(key + ":slow", 3.0)] * 2)  # timeout 0.5 s, no retries: two failures
    unknown = [payload_mod.build(f"no.such.job_{i}", [i]) for i in range(500)]
    push_raw(r, ns, "default", unknown)
    stale = [dict(payload_mod.build("tests.jobs.record", [key, "x"], queue="elsewhere"), enqueued_at=time.time() - 30)]
    push_raw(r, ns, "elsewhere", stale * 3)  # a queue nobody works: its size and latency
    jobs.record.set(queue="elsewhere", priority=4).enqueue(key, "urgent")  # counted in its size too
    jobs.record.set(queue="elsewhere", group="tenant").enqueue_bulk([(key, "a"), (key, "b")])
    jobs.record.enqueue_in(3600, key, "later")

    def settled() -> dict | None:
        m = scrape_when_up(port)
        return m if total(m, "jiggler_jobs_processed_total") == 518 else None

    m = wait_for(settled, 30, "518 jobs processed")
    record, fail, slow = "tests.jobs.record", "tests.jobs.always_fail", "tests.jobs.slow_io"
    assert total(m, "jiggler_jobs_processed_total", job=record, queue="default") == 12
    assert total(m, "jiggler_jobs_failed_total", job=record) == 0
    assert total(m, "jiggler_jobs_processed_total", job=fail) == total(m, "jiggler_jobs_failed_total", job=fail) == 4
    assert total(m, "jiggler_jobs_processed_total", job=slow) == total(m, "jiggler_jobs_failed_total", job=slow) == 2
    assert total(m, "jiggler_jobs_failed_total") == 506
    # 500 distinct unknown names: one series, processed and failed, no run time (they never ran).
    unknown_series = {ls for ls in series(m, "jiggler_jobs_processed_total") if ("job", "unknown") in ls}
    assert unknown_series == {(("job", "unknown"), ("queue", "default"))}
    assert total(m, "jiggler_jobs_failed_total", job="unknown") == 500
    assert len(series(m, "jiggler_jobs_processed_total")) == 4
    for job, runs in ((record, 12), (fail, 4), (slow, 2)):
        assert total(m, "jiggler_job_duration_seconds_count", job=job) == runs
        assert total(m, "jiggler_job_duration_seconds_bucket", job=job, le="+Inf") == runs
    assert total(m, "jiggler_job_duration_seconds_count", job="unknown") == 0
    assert total(m, "jiggler_job_duration_seconds_bucket", job=slow, le="0.25") == 0  # each ran its 0.5 s timeout
    assert total(m, "jiggler_job_duration_seconds_bucket", job=slow, le="1.0") == 2
    assert total(m, "jiggler_job_duration_seconds_sum", job=slow) >= 1.0
    # Gauges: the children's summed, and Redis' read on the scrape.
    assert total(m, "jiggler_concurrency") == 10
    assert total(m, "jiggler_busy_workers") == 0
    assert total(m, "jiggler_queue_size", queue="elsewhere") == 6
    assert total(m, "jiggler_queue_latency_seconds", queue="elsewhere") >= 30
    assert total(m, "jiggler_queue_size", queue="default") == 0
    assert total(m, "jiggler_queue_latency_seconds", queue="default") == 0
    assert total(m, "jiggler_scheduled_jobs") == 1
    assert total(m, "jiggler_retry_jobs") == r.zcard(ns.keys.retry) == 0
    wait_for(lambda: r.zcard(ns.keys.dead) == 506, 10, "506 dead")
    assert total(scrape(port), "jiggler_dead_jobs") == 506
    assert total(m, "jiggler_processes") == 2

    # A child killed and replaced: its counts stay, its live gauges go, the replacement's count on.
    before = {k: v for k, v in m.items() if k[0].startswith("jiggler_job")}
    victim = min(child_pids(r, ns))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: children(r, ns, killed=victim, supervisor=w.pid), 30, "a replacement process")
    m = wait_for(lambda: (lambda m: m if total(m, "jiggler_concurrency") == 10 else None)(scrape(port)), 20, "gauges")
    for k, v in before.items():
        assert m.get(k, 0) >= v, k
    jobs.record.enqueue_bulk([(key + ":ok", f"more{i}") for i in range(20)])
    wait_for(lambda: r.llen(key + ":ok") == 32, 20, "20 more jobs")
    wait_for(
        lambda: total(scrape(port), "jiggler_jobs_processed_total", job=record) == 32, 10, "the later jobs counted"
    )
    assert total(scrape(port), "jiggler_processes") == 2
    assert w.stop() == 0


def test_one_process_serves_while_jobs_run(ns, r, start_worker):
    port = free_port()
    w = start_worker("-c", "4", "--metrics-port", str(port))
    scrape_when_up(port)
    key = f"{ns.namespace}:t:naps"
    jobs.nap.enqueue_bulk([(key, 2.0)] * 3)
    m = wait_for(lambda: (lambda m: m if total(m, "jiggler_busy_workers") == 3 else None)(scrape(port)), 10, "3 busy")
    assert total(m, "jiggler_concurrency") == 4
    assert total(m, "jiggler_processes") == 1
    assert total(m, "jiggler_jobs_processed_total") == 0
    wait_for(lambda: r.llen(key) == 3, 10, "the naps")
    m = wait_for(lambda: (lambda m: m if total(m, "jiggler_busy_workers") == 0 else None)(scrape(port)), 10, "idle")
    assert total(m, "jiggler_jobs_processed_total", job="tests.jobs.nap", queue="default") == 3
    assert total(m, "jiggler_job_duration_seconds_bucket", job="tests.jobs.nap", le="1.0") == 0
    assert total(m, "jiggler_job_duration_seconds_bucket", job="tests.jobs.nap", le="2.5") == 3
    assert w.stop() == 0


def test_without_the_option_prometheus_client_is_not_loaded(ns, r, start_worker):
    w = start_worker()
    key = f"{ns.namespace}:t:modules"
    jobs.record_loaded_modules.enqueue(key)
    wait_for(lambda: r.exists(key), 20, "the module list")
    loaded = r.lrange(key, 0, -1)
    assert "jiggler_gevent.server.launcher" in loaded
    assert "jiggler_gevent.server.prometheus" not in loaded  # the one module that imports prometheus_client
    assert w.stop() == 0


def test_a_port_in_use_is_a_usage_error(ns, start_worker):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        w = start_worker("--metrics-port", str(s.getsockname()[1]))
        assert w.proc.wait(30) == 2
    assert "--metrics-port" in w.output()


@pytest.fixture
def without_prometheus_client(tmp_path) -> dict:
    """An environment where `import prometheus_client` fails, as where the [metrics] extra is not installed: a
    package of that name first on the path that raises ImportError."""
    package = tmp_path / "prometheus_client"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError(\"No module named 'prometheus_client'\")\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    return s


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("case", ["out of range", "taken", "no prometheus_client"])
def test_metrics_port_mistakes_end_with_one_line_and_exit_2(
    ns, r, start_worker, without_prometheus_client, case, processes
):
    env, taken = None, None
    port = "99999"
    if case == "taken":
        taken = taken_port()
        port = str(taken.getsockname()[1])
    elif case == "no prometheus_client":
        env, port = without_prometheus_client, str(free_port())
    try:
        w = start_worker("-p", processes, "--metrics-port", port, env=env)
        assert w.proc.wait(30) == 2
    finally:
        if taken is not None:
            taken.close()
    out = w.output()
    errors = [line for line in out.splitlines() if line.startswith("gjiggler: error:")]
    assert len(errors) == 1 and "metrics-port" in errors[0], out
    assert "Traceback" not in out and "WARNING" not in out, out
    if case == "no prometheus_client":
        assert "pip install 'jiggler_gevent[metrics]'" in errors[0]
    assert r.scard(ns.keys.processes) == 0


def test_metrics_host_chooses_the_listening_address(ns, start_worker):
    port = free_port()
    w = start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.2")
    scraped = wait_for(lambda: _reachable(f"http://127.0.0.2:{port}/metrics"), 20, "/metrics on 127.0.0.2")
    assert "jiggler_concurrency" in scraped
    assert _reachable(f"http://127.0.0.1:{port}/metrics") is None  # only the address asked for
    assert f"http://127.0.0.2:{port}/metrics" in w.output()
    assert w.stop() == 0


def test_metrics_host_is_a_django_setting_too():
    from jiggler_gevent.cli import worker as worker_command
    from jiggler_gevent.contrib.django import conf

    params = worker_command.make_context("worker", conf.worker_args({"METRICS_HOST": "127.0.0.2"}, [])).params
    assert params["metrics_host"] == "127.0.0.2"
    assert worker_command.make_context("worker", []).params["metrics_host"] == "0.0.0.0"


def _reachable(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def _ctx(name: str, queue: str, seconds: float, exception: BaseException | None = None, disposition: str = "ack"):
    from jiggler_gevent.middleware import Disposition, JobContext

    ctx = JobContext({"name": name, "queue": queue}, "")
    ctx.started_at = time.time() - seconds
    ctx.exception = exception
    ctx.disposition = Disposition(disposition)
    return ctx


def _exposed(read) -> dict:
    """{(sample name, sorted labels): value} of a JobCollector over `read`, as exposed and parsed."""
    from prometheus_client import CollectorRegistry, generate_latest

    from jiggler_gevent.server.prometheus import JobCollector

    registry = CollectorRegistry()
    registry.register(JobCollector(read))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def test_jobs_are_counted_in_buckets_by_bounded_labels_and_rescheduled_ones_not_at_all():
    from jiggler_gevent.server.prometheus import JobMetrics

    metrics = JobMetrics(("default",), 7, known=lambda name: name == "app.ok")
    metrics.start(lambda: 3)
    metrics.after_process(_ctx("app.ok", "default", 0.3))
    metrics.after_process(_ctx("app.ok", "default", 0.003, exception=ValueError()))
    metrics.after_process(_ctx("app.ok", "default", 5.0, disposition="reschedule"))  # not run: not counted
    metrics.after_process(_ctx("app.ok", "other", 0.0))
    for i in range(100):
        metrics.unrunnable({"name": f"odd_{i}", "queue": "default"})
    metrics.unrunnable({"name": ["not", "a", "name"], "queue": {"nor": "a queue"}})
    m = _exposed(metrics.state)
    ok = {"job": "app.ok", "queue": "default"}
    assert total(m, "jiggler_jobs_processed_total", **ok) == 2
    assert total(m, "jiggler_jobs_failed_total", **ok) == 1
    assert total(m, "jiggler_job_duration_seconds_bucket", le="0.005", **ok) == 1
    assert total(m, "jiggler_job_duration_seconds_bucket", le="0.25", **ok) == 1
    assert total(m, "jiggler_job_duration_seconds_bucket", le="0.5", **ok) == 2
    assert total(m, "jiggler_job_duration_seconds_bucket", le="+Inf", **ok) == 2
    assert 0.3 <= total(m, "jiggler_job_duration_seconds_sum", **ok) < 1.0
    assert total(m, "jiggler_jobs_processed_total", job="app.ok", queue="unknown") == 1
    assert total(m, "jiggler_jobs_processed_total", job="unknown", queue="default") == 100
    assert total(m, "jiggler_jobs_failed_total", job="unknown", queue="unknown") == 1
    assert len(series(m, "jiggler_jobs_processed_total")) == 4
    assert total(m, "jiggler_busy_workers") == 3
    assert total(m, "jiggler_concurrency") == 7


def _child_writes_snapshot(directory: str, jobs: int) -> int:
    """Fork a process that runs `jobs` jobs with metrics written to `directory`, stops and exits; its pid."""
    from jiggler_gevent.server.prometheus import JobMetrics

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = JobMetrics(("default",), 5, directory, known=lambda name: True)
            child.start(lambda: 2)
            for _ in range(jobs):
                child.after_process(_ctx("app.job", "default", 0.01))
            child.stop()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    return pid


def test_snapshots_sum_the_children_and_keep_an_exited_ones_totals_but_not_its_gauges(tmp_path):
    from jiggler_gevent.server.prometheus import Snapshots

    first, second = _child_writes_snapshot(str(tmp_path), 3), _child_writes_snapshot(str(tmp_path), 4)
    snapshots = Snapshots(str(tmp_path))
    m = _exposed(snapshots.read)
    assert total(m, "jiggler_jobs_processed_total") == 7
    assert total(m, "jiggler_concurrency") == 10
    assert total(m, "jiggler_busy_workers") == 4
    snapshots.forget(first)
    m = _exposed(snapshots.read)
    assert total(m, "jiggler_jobs_processed_total") == 7
    assert total(m, "jiggler_job_duration_seconds_bucket", le="0.025") == 7
    assert total(m, "jiggler_concurrency") == 5
    assert total(m, "jiggler_busy_workers") == 2
    snapshots.forget(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retired.json"]
    assert total(_exposed(snapshots.read), "jiggler_jobs_processed_total") == 7


def test_recycled_processes_hand_over_every_count(ns, r, start_worker):
    port = free_port()
    w = start_worker("-p", "1", "-c", "5", "--max-jobs", "10", "--metrics-port", str(port))
    scrape_when_up(port)
    key = f"{ns.namespace}:t:recycled"
    jobs.record.enqueue_bulk([(key, str(i)) for i in range(45)])
    wait_for(lambda: r.llen(key) == 45, 30, "45 jobs")
    # At least four processes ran them, ten each at most; each stopped gracefully, so none of its counts is lost.
    m = wait_for(
        lambda: (lambda m: m if total(m, "jiggler_jobs_processed_total") == 45 else None)(scrape(port)), 10, "45"
    )
    assert total(m, "jiggler_job_duration_seconds_count", job="tests.jobs.record") == 45
    assert total(m, "jiggler_concurrency") == 5
    assert w.stop() == 0
