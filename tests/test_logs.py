"""`--log-format json` (Django LOG_FORMAT): every log line of a worker, -p N children included, is one JSON object."""

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid

import click
import gevent
import pytest

from jiggler_gevent.cli import worker as worker_command
from jiggler_gevent.contrib.django import conf
from jiggler_gevent.logs import JobFilter, JsonFormatter, TextFormatter, current_job
from tests import jobs, log_jobs
from tests.conftest import ROOT, gjiggler_command, wait_for
from tests.test_supervisor import children

FIELDS = {"time", "level", "logger", "message", "pid"}


def parse_every_line(output: str) -> list[dict]:
    """Each non-empty line of `output` as a JSON object with the fields every line has."""
    entries = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n--- whole output ---\n{output}") from None
        assert isinstance(entry, dict) and FIELDS <= set(entry), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize("processes", ["1", "2"])
def test_every_worker_log_line_is_a_json_object(ns, r, start_worker, tkey, processes):
    ok = jobs.record.enqueue(tkey("runs"), "ok")
    failed = jobs.always_fail.enqueue(tkey("fails"))
    w = start_worker("-p", processes, "-c", "2", "-v", "--log-format", "json")
    wait_for(lambda: r.llen(tkey("runs")) == 1 and r.zcard(ns.keys.dead) == 1, 20, "one success, one failure")
    assert w.stop() == 0
    entries = parse_every_line(w.output())

    done = [e for e in entries if e.get("jid") == ok and e["message"].startswith("done ")]
    assert len(done) == 1 and done[0]["job"] == "tests.jobs.record" and done[0]["level"] == "INFO"
    assert done[0]["logger"] == "jiggler_gevent.jobs"
    fail = [e for e in entries if e.get("jid") == failed and e["message"].startswith("fail ")]
    assert len(fail) == 1, entries
    assert fail[0]["job"] == "tests.jobs.always_fail" and fail[0]["level"] == "WARNING"
    assert fail[0]["logger"] == "jiggler_gevent.processor"
    assert "Traceback" in fail[0]["exc_info"] and "RuntimeError: this job always fails" in fail[0]["exc_info"]
    assert f"tests.jobs.always_fail jid={failed}" in fail[0]["message"]  # the text message is unchanged

    worker_pids = {e["pid"] for e in entries if "jid" in e}
    assert w.pid not in worker_pids if processes == "2" else worker_pids == {w.pid}
    if processes == "2":
        assert any(e["pid"] == w.pid and e["logger"] == "jiggler_gevent.supervisor" for e in entries)
    assert all(isinstance(e["pid"], int) and e["time"].endswith("+00:00") for e in entries)


def test_text_stays_the_default(ns, r, start_worker, tkey):
    failed = jobs.always_fail.enqueue(tkey("fails"))
    w = start_worker("-c", "1")
    wait_for(lambda: r.zcard(ns.keys.dead) == 1, 10, "the failed job in the dead set")
    w.stop()
    out = w.output()
    assert f"tests.jobs.always_fail jid={failed}" in out and "\n  Traceback" in out
    assert not any(line.startswith("{") for line in out.splitlines())


JOB_LINE = re.compile(r" INFO jiggler_gevent\.jobs: (\w+) (\S+) jid=(\w+) in (\d+\.\d{3})s")


def test_each_finished_job_gets_one_info_line_with_its_outcome_and_run_time(ns, r, start_worker, tkey):
    expected = {
        jobs.record.enqueue(tkey("ok"), "v"): ("done", "tests.jobs.record"),
        jobs.fail_times.enqueue(tkey("retry"), 5): ("retry", "tests.jobs.fail_times"),
        jobs.always_fail.enqueue(tkey("dead")): ("dead", "tests.jobs.always_fail"),
        jobs.fail_and_vanish.enqueue(tkey("gone")): ("failed", "tests.jobs.fail_and_vanish"),
        jobs.nap.enqueue(tkey("nap"), 0.3): ("done", "tests.jobs.nap"),
    }
    w = start_worker("-c", "5")
    wait_for(lambda: len(JOB_LINE.findall(w.output())) == len(expected), 20, "a line per job")
    assert w.stop() == 0
    lines = JOB_LINE.findall(w.output())
    assert {jid: (outcome, name) for outcome, name, jid, _ in lines} == expected
    seconds = {jid: float(took) for _, _, jid, took in lines}
    assert 0.3 <= seconds[next(j for j, (_, n) in expected.items() if n == "tests.jobs.nap")] < 2
    assert len(lines) == len(expected)  # one each: not counting the failures' WARNING lines with their tracebacks


def test_job_log_off_writes_no_job_lines_and_is_a_django_setting_too(ns, r, start_worker, tkey):
    jobs.record.enqueue(tkey("ok"), "v")
    jobs.always_fail.enqueue(tkey("dead"))
    w = start_worker("-c", "2", "--job-log", "off")
    wait_for(lambda: r.llen(tkey("ok")) == 1 and r.zcard(ns.keys.dead) == 1, 20, "both jobs")
    assert w.stop() == 0
    out = w.output()
    assert "jiggler_gevent.jobs" not in out and "WARNING jiggler_gevent.processor: fail" in out
    params = worker_command.make_context("worker", conf.worker_args({"JOB_LOG": "debug"}, [])).params
    assert params["job_log"] == "debug"
    assert worker_command.make_context("worker", []).params["job_log"] == "info"


def test_verbose_shows_our_debug_lines_not_the_redis_clients(ns, r, start_worker, tkey):
    chatty = log_jobs.chatty.enqueue(tkey("done"), "x", 1)
    w = start_worker("-r", "tests.log_jobs", "-c", "2", "-v")
    wait_for(lambda: r.llen(tkey("done")) == 1, 20, "the job")
    assert w.stop() == 0
    out = w.output()
    assert f"DEBUG jiggler_gevent.processor: start tests.log_jobs.chatty jid={chatty}" in out, out
    debug_loggers = set(re.findall(r" DEBUG (\S+):", out))
    assert debug_loggers and all(name.startswith("jiggler_gevent.") for name in debug_loggers), debug_loggers
    assert "INFO tests.log_jobs [tests.log_jobs.chatty" in out  # the job's own INFO lines still show


FORGED = "FORGED 2026-01-01 00:00:00,000 pid=1 ERROR jiggler_gevent.processor: nothing happened"


def test_a_newline_in_a_job_name_or_error_forges_no_text_line(ns, r, start_worker, tkey):
    """A name pushed with `gjiggler enqueue` and an error message, each with a newline and a made-up record after
    it: the worker's lines keep them escaped on the record's line, or indented in its traceback."""
    pushed = subprocess.run(gjiggler_command(ns, "enqueue", "a\n" + FORGED), cwd=ROOT, capture_output=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    log_jobs.fails_with.enqueue(tkey("f"), "boom\n" + FORGED)
    w = start_worker("-r", "tests.log_jobs", "-c", "2")
    wait_for(lambda: r.zcard(ns.keys.dead) == 2, 15, "both jobs dead")
    assert w.stop() == 0
    out = w.output()
    assert "dead a\\nFORGED" in out and "ValueError: boom" in out
    records = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert records and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} pid=", x) for x in records), records


def test_the_text_formatter_escapes_the_first_line_and_indents_the_rest():
    try:
        raise ValueError("two\nlines\r")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "a\nb %s", ("c\x1b[2K",), sys.exc_info())
    record.jid, record.job = "abc", "app.jobs\nthing"
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith(" ERROR x [app.jobs\\nthing jid=abc]: a\\nb c\\x1b[2K")
    assert rest[0] == "  Traceback (most recent call last):" and rest[-2:] == ["  ValueError: two", "  lines\\r"]


def test_a_bad_log_format_is_a_usage_error():
    out = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "worker", "--log-format", "xml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    assert "log-format" in out.stderr and "Traceback" not in out.stderr


def test_the_django_setting_reaches_the_worker():
    params = worker_command.make_context("worker", conf.worker_args({"LOG_FORMAT": "json"}, [])).params
    assert params["log_format"] == "json"
    assert worker_command.make_context("worker", conf.worker_args({}, [])).params["log_format"] == "text"
    with pytest.raises(click.BadParameter):
        worker_command.make_context("worker", conf.worker_args({"LOG_FORMAT": "xml"}, []))


def test_the_formatter_keeps_a_multi_line_message_and_traceback_on_one_line():
    try:
        raise ValueError("two\nlines")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "a\nb %s", ("c",), sys.exc_info())
    record.jid, record.job = "abc", "app.jobs.thing"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "a\nb c" and entry["jid"] == "abc" and entry["job"] == "app.jobs.thing"
    assert entry["level"] == "ERROR" and entry["logger"] == "x" and "ValueError: two\nlines" in entry["exc_info"]


def test_a_replacement_child_logs_json_too(ns, r, start_worker):
    """The first children are forked with the supervisor's logging; a replacement is a fresh command line."""
    w = start_worker("-p", "2", "-c", "1", "-v", "--log-format", "json")
    first = wait_for(lambda: children(r, ns), 20, "two children")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    now = wait_for(lambda: children(r, ns, killed=victim, supervisor=w.pid), 20, "a replacement child")
    (replacement,) = now - first
    assert w.stop() == 0
    entries = parse_every_line(w.output())
    assert any(e["pid"] == replacement and e["logger"] == "jiggler_gevent.launcher" for e in entries), entries


def _log_worker(start_worker, *args: str):
    return start_worker("-r", "tests.log_jobs", "-v", "--log-format", "json", *args)


def test_lines_a_job_logs_itself_carry_its_jid_among_concurrent_jobs(ns, r, start_worker, tkey):
    tags = [f"t{i}" for i in range(30)]
    jid_of = {tag: log_jobs.chatty.enqueue(tkey("done"), tag, 5) for tag in tags}
    w = _log_worker(start_worker, "-c", "30")
    wait_for(lambda: r.llen(tkey("done")) == len(tags), 30, "every chatty job done")
    assert w.stop() == 0
    entries = parse_every_line(w.output())

    mine = [e for e in entries if e["logger"] == "tests.log_jobs"]
    assert len(mine) == 5 * len(tags)
    for e in mine:
        tag = e["message"].split()[0].removeprefix("tag=")
        assert e["jid"] == jid_of[tag] and e["job"] == "tests.log_jobs.chatty", e
    order = [e["jid"] for e in mine]
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches > len(tags), "the jobs' lines should interleave: they ran concurrently"
    outside = [e for e in entries if e["logger"].startswith("jiggler_gevent.launcher")]
    assert outside and all("jid" not in e for e in outside)  # lines outside a job carry none


def test_every_line_of_a_two_process_worker_is_json_job_code_warnings_and_gevent_included(ns, r, start_worker, tkey):
    chatty = log_jobs.chatty.enqueue(tkey("chatty"), "x", 2)
    failing = log_jobs.fails_after_logging.enqueue(tkey("fails"))
    noisy = log_jobs.noisy.enqueue(tkey("noisy"))
    w = _log_worker(start_worker, "-p", "2", "-c", "3")
    wait_for(
        lambda: r.llen(tkey("chatty")) and r.llen(tkey("noisy")) and r.zcard(ns.keys.dead) == 1,
        30,
        "the three jobs ended",
    )
    # Both children must be running (not still starting) for each to log its last line at the stop.
    wait_for(lambda: r.scard(ns.keys.processes) == 2, 30, "both worker processes registered")
    assert w.stop() == 0
    entries = parse_every_line(w.output())

    def one(predicate):
        found = [e for e in entries if predicate(e)]
        assert len(found) == 1, (found, entries)
        return found[0]

    assert one(lambda e: e["message"] == "about to fail")["jid"] == failing
    fail = one(lambda e: e.get("jid") == failing and e["message"].startswith("fail "))
    assert "ValueError: first line\nsecond line" in fail["exc_info"] and "log_jobs.py" in fail["exc_info"]
    warned = one(lambda e: e["logger"] == "py.warnings")
    assert "UserWarning: a thing to warn about" in warned["message"] and warned["jid"] == noisy
    hub = one(lambda e: e["logger"] == "gevent.hub")
    assert "failed with KeyError" in hub["message"] and "from a spawned greenlet" in hub["exc_info"]
    assert len([e for e in entries if e.get("jid") == chatty and e["logger"] == "tests.log_jobs"]) == 2
    supervisor = [e["message"] for e in entries if e["pid"] == w.pid]
    assert any("starting 2 worker processes" in m for m in supervisor)
    assert any("every worker process has stopped" in m for m in supervisor)
    assert len([e for e in entries if e["message"].startswith("stopped;")]) == 2  # both children's last line


def test_a_usage_error_after_json_logging_is_set_up_is_json_too(ns):
    out = subprocess.run(
        [*gjiggler_command(ns, "worker", "--log-format", "json", "-r", "tests.no_such_module")],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    (entry,) = parse_every_line(out.stderr)
    assert entry["level"] == "ERROR" and entry["message"].startswith("gjiggler: error: Invalid value for -r")


def test_gjiggler_web_logs_json_when_asked(ns):
    proc = subprocess.Popen(
        gjiggler_command(ns, "web", "--port", "0", "--log-format", "json"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        text=True,
    )
    try:
        url = re.search(r"http://\S+/", proc.stdout.readline()).group(0)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url + "queues", timeout=10) as resp:
            assert resp.status == 200
        proc.terminate()
        assert proc.wait(15) == 0
        entries = parse_every_line(proc.stderr.read())
        assert any(e["logger"] == "jiggler_gevent.web" and "GET /queues" in e["message"] for e in entries), entries
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(JobFilter())
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_job_context_is_per_greenlet():
    logger, stream = _capture(JsonFormatter())

    def run(i: int) -> None:
        token = current_job.set((f"app.job{i % 3}", f"jid{i}"))
        try:
            for n in range(3):
                logger.info("from %d line %d", i, n)
                gevent.sleep(0)
        finally:
            current_job.reset(token)

    gevent.joinall([gevent.spawn(run, i) for i in range(50)], raise_error=True)
    logger.info("outside")
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(entries) == 151
    for e in entries[:-1]:
        i = int(e["message"].split()[1])
        assert e["jid"] == f"jid{i}" and e["job"] == f"app.job{i % 3}", e
    assert entries[0]["jid"] != entries[1]["jid"]  # the greenlets did take turns
    assert "jid" not in entries[-1] and current_job.get() is None


def test_text_lines_show_the_job_unless_the_message_names_it():
    logger, stream = _capture(TextFormatter())
    token = current_job.set(("app.jobs.thing", "abc123"))
    try:
        logger.info("hello")
        logger.info("done %s jid=%s", "app.jobs.thing", "abc123")
    finally:
        current_job.reset(token)
    logger.info("idle")
    hello, done, idle = stream.getvalue().splitlines()
    assert hello.endswith(f"{logger.name} [app.jobs.thing jid=abc123]: hello")
    assert done.endswith(f"{logger.name}: done app.jobs.thing jid=abc123")
    assert idle.endswith(f"{logger.name}: idle")
