"""Bad input never kills a worker: arbitrary bytes, JSON of the wrong shape, mistyped and missing fields, huge
and deeply nested payloads, unknown names and mismatched arguments all end in the dead set with an error a
person can act on, and good jobs around them still run. Bad CLI values: one line, exit code 2.
"""

import json
import string
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jiggler_gevent import cli, config
from jiggler_gevent.server.acker import Acker
from jiggler_gevent.server.job_metrics import Counters
from jiggler_gevent.server.launcher import server_chain
from jiggler_gevent.server.processor import Processor
from tests import fault_jobs, jobs  # noqa: F401 (registers the jobs the Processor looks up)
from tests.conftest import ROOT, wait_for

GOOD = "tests.fault_jobs.takes_two"


def fuzz(examples: int) -> settings:
    """Hypothesis settings for tests that use the Redis fixtures (one namespace for all examples)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
not_a_list = json_values.filter(lambda v: not isinstance(v, list))
not_a_dict = json_values.filter(lambda v: not isinstance(v, dict))
not_a_str = json_values.filter(lambda v: not isinstance(v, str))
unknown_names = st.text(min_size=1, max_size=40).filter(lambda n: n not in (GOOD, "tests.jobs.record"))


def _wrong_field(draw: Any) -> dict:
    base = {"jid": "j", "name": GOOD, "args": [1, 2], "kwargs": {}, "queue": "default"}
    field = draw(st.sampled_from(["name", "args", "kwargs", "queue", "drop-name"]))
    if field == "drop-name":
        del base["name"]
    else:
        base[field] = draw({"name": not_a_str, "args": not_a_list, "kwargs": not_a_dict, "queue": not_a_str}[field])
    return base


@st.composite
def mistyped(draw: Any) -> str:
    """A payload with one required field missing or of the wrong type."""
    return json.dumps(_wrong_field(draw))


def _binds(args: list[Any], kwargs: dict) -> bool:
    names = ["a", "b"]
    bound = dict(zip(names, args, strict=False))
    if len(args) > 2 or set(kwargs) - set(names) or set(kwargs) & set(bound):
        return False
    return len(bound) + len(kwargs) == 2


@st.composite
def bad_arguments(draw: Any) -> str:
    """A registered job with args/kwargs that do not fit `takes_two(a, b)`."""
    args = draw(st.lists(st.integers(), max_size=4))
    kwargs = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(), max_size=3))
    if _binds(args, kwargs):
        kwargs["c"] = 0
    return json.dumps({"name": GOOD, "args": args, "kwargs": kwargs})


bad_text = st.one_of(
    st.text(max_size=200),  # arbitrary text, mostly not JSON
    not_a_dict.map(json.dumps),  # JSON of the wrong shape
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "name"), json_values, max_size=5).map(json.dumps),
    mistyped(),
    unknown_names.map(lambda n: json.dumps({"name": n, "args": [], "kwargs": {}})),
    bad_arguments(),
)
bad_bytes = st.one_of(st.binary(max_size=200), bad_text.map(lambda s: s.encode("utf-8", "surrogatepass")))


# -- in process: the Processor on a real Redis, thousands of inputs -------------------------------------------


@pytest.fixture
def processor(ns):
    client = config.redis_client(ns.url)
    working = ns.keys.working("fuzz")
    acker = Acker(client, ns.keys, working)
    return Processor(acker, server_chain(Counters())), client, working


@fuzz(300)
@given(raw=bad_text)
def test_processor_buries_every_bad_payload_with_a_reason(processor, raw):
    proc, client, working = processor
    client.delete(working, proc.acker.keys.dead)
    client.lpush(working, raw)
    proc.process(raw)  # must not raise, whatever the input
    proc.acker.flush()
    assert client.llen(working) == 0, "the payload was neither acknowledged nor buried"
    dead = [json.loads(x) for x in client.zrange(proc.acker.keys.dead, -1, -1)]
    entry = dead[-1]
    assert entry["raw"] == raw
    assert entry["error_class"] == "PayloadError"
    assert len(entry["error_message"]) > 15 and "\n" not in entry["error_message"]
    client.delete(proc.acker.keys.dead)


@pytest.mark.parametrize(
    "raw, words",
    [
        ("", "not valid JSON"),
        ("[1]", "not an object"),
        ('{"args": []}', "no job name"),
        (json.dumps({"name": GOOD, "args": {"a": 1}}), "'args' must be a list"),
        (json.dumps({"name": GOOD, "args": [1, 2], "kwargs": [1]}), "'kwargs' must be an object"),
        (json.dumps({"name": GOOD, "args": [1, 2], "queue": 7}), "'queue' must be a string"),
        (json.dumps({"name": "os.system", "args": ["true"]}), "no job named 'os.system'"),
        (json.dumps({"name": GOOD, "args": [1]}), "takes_two(a: int, b: int)"),
        (json.dumps({"name": GOOD, "args": [1, 2], "kwargs": {"c": 3}}), "unexpected keyword argument 'c'"),
        (f'{{"name": "{GOOD}", "args": [1, NaN]}}', "NaN"),
        (f'{{"name": "{GOOD}", "args": [1, 2], "created_at": Infinity}}', "Infinity"),
    ],
)
def test_each_kind_of_bad_payload_says_what_is_wrong(processor, raw, words):
    proc, client, working = processor
    client.lpush(working, raw)
    proc.process(raw)
    proc.acker.flush()
    [entry] = [json.loads(x) for x in client.zrange(proc.acker.keys.dead, 0, -1)]
    assert words in entry["error_message"], entry["error_message"]
    assert client.llen(working) == 0


@pytest.mark.parametrize("depth", [50, 900, 960, 980, 990, 995, 1000, 1100, 100_000])
def test_deeply_nested_json_is_buried_or_run_never_stuck(processor, depth):
    proc, client, working = processor
    for raw in (
        "[" * depth + "]" * depth,
        '{{"name": "{}", "args": [1, {}]}}'.format(GOOD, "[" * depth + "]" * depth),
        '{"name": "nope", "args": [%s]}' % ('{"a":' * depth + "1" + "}" * depth),
    ):
        client.lpush(working, raw)
        proc.process(raw)
        proc.acker.flush()
        assert client.llen(working) == 0, f"depth {depth}: a nested payload stayed held"
    assert client.zcard(proc.acker.keys.dead) + client.zcard(proc.acker.keys.retry) == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("retry_count", -5),
        ("retry_count", 10**300),
        ("retry_count", "2"),
        ("retry_count", 1.5),
        ("retries", "lots"),
        ("retries", -1),
        ("retries", 10**300),
        ("dead", "no"),
        ("timeout", "soon"),
        ("timeout", -3),
        ("timeout", 1e308),
        ("jid", 12),
        ("failed_at", "yesterday"),
        ("recoveries", "x"),
    ],
)
def test_a_failing_job_with_a_mistyped_field_is_never_dropped(processor, field, value, tkey, redis_url):
    """Whatever the retry fields say, a failure ends in the retry or dead set (or the payload is refused)."""
    proc, client, working = processor
    p = {
        "jid": "j1",
        "name": "tests.fault_jobs.mark_then_fail",
        "args": [redis_url, tkey("f")],
        "kwargs": {},
        "queue": "default",
        "retries": 3,
        "dead": True,
        field: value,
    }
    raw = json.dumps(p)
    client.lpush(working, raw)
    proc.process(raw)
    proc.acker.flush()
    assert client.llen(working) == 0
    stored = client.zrange(proc.acker.keys.retry, 0, -1) + client.zrange(proc.acker.keys.dead, 0, -1)
    assert len(stored) == 1, f"{field}={value!r}: the failed job was dropped"
    entry = json.loads(stored[0])
    assert entry.get("error_class") in ("RuntimeError", "PayloadError")


# -- a real worker process: bad payloads pushed as bytes among good jobs --------------------------------------


@fuzz(8)
@given(batch=st.lists(bad_bytes, min_size=1, max_size=12))
def test_worker_survives_any_bytes_and_runs_the_good_jobs_around_them(ns, r, start_worker, tkey, batch):
    w = _one_worker(start_worker)
    q = ns.keys.queue("default")
    before = r.zcard(ns.keys.dead)
    mark = tkey(f"good-{time.monotonic_ns()}")
    for i, raw in enumerate(batch):
        r.lpush(q, raw)
        jobs.record.enqueue(mark, str(i))
    wait_for(lambda: r.llen(mark) == len(batch), 20, "the good jobs between the bad ones")
    wait_for(lambda: r.zcard(ns.keys.dead) == before + len(batch), 20, "every bad payload in the dead set")
    wait_for(lambda: not any(r.llen(k) for k in r.scan_iter(ns.keys.working("*"))), 10, "nothing left held")
    assert w.proc.poll() is None, w.output()[-3000:]
    for raw in r.zrange(ns.keys.dead, before, -1):
        entry = json.loads(raw)
        assert entry["error_class"] == "PayloadError" and entry["error_message"]


_workers: dict = {}


def _one_worker(start_worker):
    """One worker per test function, though hypothesis calls the body many times."""
    w = _workers.get(id(start_worker))
    if w is None or w.proc.poll() is not None:
        w = _workers[id(start_worker)] = start_worker("-r", "tests.fault_jobs", "-c", "4")
    return w


def test_non_utf8_bytes_huge_and_nested_payloads_in_a_worker(ns, r, start_worker, tkey):
    q = ns.keys.queue("default")
    huge_garbage = b"\x00\xff" + b"x" * (10 * 1024 * 1024)
    nested = ('{"name": "tests.jobs.record", "args": ["k", %s]}' % ("[" * 100_000 + "]" * 100_000)).encode()
    bad = [
        b"\xff\xfe\xfd",
        b'{"name": "tests.jobs.record", "args": ["\xc3\x28", "v"]}',
        huge_garbage,
        nested,
        b'{"name": "%s", "args": [1, NaN]}' % GOOD.encode(),
    ]
    for raw in bad:
        r.lpush(q, raw)
        jobs.record.enqueue(tkey("between"), "ok")
    big = "y" * (10 * 1024 * 1024)
    jobs.record.enqueue(tkey("big"), big)
    w = start_worker("-r", "tests.fault_jobs", "-c", "3")
    wait_for(lambda: r.llen(tkey("between")) == len(bad), 30, "the good jobs between the bad ones")
    wait_for(lambda: r.llen(tkey("big")) == 1, 30, "the 10 MB job")
    wait_for(lambda: r.zcard(ns.keys.dead) == len(bad), 30, "every bad payload in the dead set")
    assert r.lindex(tkey("big"), 0) == big
    assert w.proc.poll() is None
    entries = [json.loads(x) for x in r.zrange(ns.keys.dead, 0, -1)]
    messages = " | ".join(e["error_message"] for e in entries)
    assert messages.count("not valid UTF-8") >= 2 and "not valid JSON" in messages, messages
    assert any(len(e.get("raw", "")) > 10_000_000 for e in entries), "the huge payload's bytes were not kept"
    assert w.stop() == 0


def test_a_payload_cannot_make_the_worker_import_or_call_anything(ns, r, start_worker, tkey):
    """Names are looked up in the registry only: a module a payload names is never imported."""
    marker = f"/tmp/jiggler-fault-{ns.namespace}"
    names = [
        "this.s",
        "os.system",
        "subprocess.call",
        "builtins.eval",
        "tests.fault_jobs._recorder",
        "tests.jobs._redis",
        "pickle.loads",
    ]
    for name in names:
        r.lpush(ns.keys.queue("default"), json.dumps({"name": name, "args": [f"touch {marker}"]}))
    jobs.record.enqueue(tkey("after"), "ok")
    w = start_worker("-r", "tests.fault_jobs", "-c", "2")
    wait_for(lambda: r.llen(tkey("after")) == 1, 15, "the good job")
    wait_for(lambda: r.zcard(ns.keys.dead) == len(names), 15, "every named-but-unregistered job dead")
    w.stop()
    import os

    assert not os.path.exists(marker)
    assert "Beautiful is better than ugly" not in w.output(), "the worker imported a module a payload named"
    for raw in r.zrange(ns.keys.dead, 0, -1):
        assert "is registered" in json.loads(raw)["error_message"]


# -- CLI: bad values, one line, exit code 2 --------------------------------------------------------------------


def _not_int_at_least(low: int):
    def bad(s: str) -> bool:
        try:
            return int(s.strip()) < low
        except ValueError:
            return True

    return bad


def _not_float_at_least(low: float):
    def bad(s: str) -> bool:
        try:
            v = float(s)
        except ValueError:
            return True
        return not (v >= low)

    return bad


printable = st.text(alphabet=string.printable.strip() + " é€", max_size=12)
BAD_VALUES = {
    "--concurrency": printable.filter(_not_int_at_least(1)) | st.integers(max_value=0).map(str),
    "--processes": printable.filter(_not_int_at_least(1)) | st.integers(max_value=0).map(str),
    "--timeout": printable.filter(_not_float_at_least(0)),
    "--preempt": printable.filter(_not_float_at_least(0)),
    "--poll-interval": printable.filter(_not_float_at_least(0.01)),
    "--heartbeat-interval": printable.filter(_not_float_at_least(0.05)),
    "--queue": st.sampled_from(["", ",", "a,b", "a,0", "a,-2", "a:b", ":", "a,1.5"])
    | printable.map(lambda s: "q," + s).filter(lambda v: _not_int_at_least(1)(v[2:]) and v != "q,"),
    "--namespace": st.sampled_from(["", "a:b", ":"]) | printable.map(lambda s: s + ":x"),
    "--redis-url": st.sampled_from(
        ["nope", "http://x", "redis://h:notaport/0", "://", "redis://h:99999/0", "redis://[::1/0"]
    ),
}


def _run_cli(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code, capsys.readouterr().err


@fuzz(120)
@given(option=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
def test_bad_worker_option_values_give_one_line_and_exit_2(capsys, ns, option, data):
    value = data.draw(BAD_VALUES[option])
    # -r names a module that does not exist: should a value wrongly pass, the error names -r, not the option.
    code, err = _run_cli(capsys, ["worker", f"{option}={value}", "-r", "tests.no_such_module_xyz"])
    lines = err.strip().splitlines()
    assert code == 2, (option, value, err)
    assert len(lines) == 1 and lines[0].startswith("gjiggler: error:"), err
    assert option.lstrip("-").split("-")[0] in lines[0].lower() or option in lines[0], (option, value, lines[0])
    config.configure(redis_url=ns.url, namespace=ns.namespace)


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--redis-url", "http://localhost:6379", "-r", "tests.jobs"],
        ["stats", "--redis-url", "nope"],
        ["enqueue", "x", "--redis-url", "redis://h:port/0"],
        ["worker", "--heartbeat-interval", "0"],
        ["worker", "-c", "1e3"],
        ["enqueue", "x", "-q", "a:b"],
    ],
)
def test_bad_values_in_a_real_process_never_print_a_traceback(args):
    out = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out
    assert len(lines) == 1 and lines[0].startswith("gjiggler: error:"), out.stderr
    assert "Traceback" not in out.stderr
