"""`--log-format json` (Django LOG_FORMAT): every log line of a worker, -p N children included, is one JSON object."""

import json
import logging
import os
import signal
import subprocess
import sys

import click
import pytest

from jiggler_gevent.cli import worker as worker_command
from jiggler_gevent.contrib.django import conf
from jiggler_gevent.logs import JsonFormatter
from tests import jobs
from tests.conftest import ROOT, wait_for
from tests.test_supervisor import child_pids

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
    assert len(done) == 1 and done[0]["job"] == "tests.jobs.record" and done[0]["level"] == "DEBUG"
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
    assert f"tests.jobs.always_fail jid={failed}" in out and "\nTraceback" in out
    assert not any(line.startswith("{") for line in out.splitlines())


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
    first = wait_for(lambda: len(child_pids(r, ns)) == 2 and child_pids(r, ns), 20, "two children")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(child_pids(r, ns)) == 2 and victim not in child_pids(r, ns), 20, "a replacement child")
    (replacement,) = child_pids(r, ns) - first
    assert w.stop() == 0
    entries = parse_every_line(w.output())
    assert any(e["pid"] == replacement and e["logger"] == "jiggler_gevent.launcher" for e in entries), entries
