"""A locked-down Redis: requirepass, an ACL user limited to the namespace's keys and the commands in WORKER_ACL,
and TLS with a CA the test makes. No pickle anywhere; a payload can only name registered jobs (see also
test_bad_input); secrets in URLs never reach logs or `gjiggler stats`.
"""

import ast
import json
import subprocess
import sys
import uuid

import pytest
import redis

from jiggler_gevent import Batch, acl, api, config, limits
from jiggler_gevent import client as client_mod
from jiggler_gevent.web import create_app
from tests import fault_jobs, jobs, result_jobs
from tests.conftest import ROOT, wait_for
from tests.test_web import Browser


def worker_acl(namespace: str) -> str:
    """The ACL rule for a user that may run workers and admin commands on one namespace, and nothing else: the
    one jiggler_gevent.acl derives, as the docs' security page gives it."""
    return acl.rule(namespace)


FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2", "-t", "1")


def _use(url: str, ns) -> None:
    config.configure(redis_url=url, namespace=ns.namespace)


def _gj(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _exercise(url: str, ns, worker_at, tkey, *extra: str) -> "tuple[object, object, redis.Redis]":
    """Every path a worker takes: a job that runs (plain, with a priority, in a group), one that fails into the retry
    set, one that dies, a scheduled one, a payload that cannot run, and the recovery of a SIGKILLed worker's jobs; the
    second worker listens on two queues, so it waits on NS:wake."""
    _use(url, ns)
    c = config.redis_client(url)
    k = ns.keys
    jobs.record.enqueue(tkey("ran"), "now")
    jobs.fail_times.enqueue(tkey("retried"), 5)
    jobs.always_fail.enqueue(tkey("died"))
    jobs.record.enqueue_in(0.3, tkey("ran"), "later")
    jobs.record.set(priority=3).enqueue(tkey("ran"), "urgent")  # a priority set, and the fetch reading it
    jobs.record.set(group="tenant").enqueue(tkey("ran"), "grouped")  # a group and its rotation
    c.lpush(k.queue("default"), "not a payload")
    doomed = worker_at(url, "-c", "2", *FAST, *extra)
    wait_for(lambda: c.llen(tkey("ran")) == 4, 20, "the immediate, priority, grouped and scheduled jobs")
    jobs.started_then_nap.enqueue(tkey("held"), 30)
    wait_for(lambda: c.llen(tkey("held") + ":started") == 1, 20, "the long job to start")
    doomed.kill()
    survivor = worker_at(url, "-c", "2", "-q", "default", "-q", "other", *FAST, *extra)  # several queues: NS:wake
    wait_for(lambda: c.llen(tkey("held") + ":started") == 2, 20, "the killed worker's job run again")
    wait_for(lambda: c.zcard(k.dead) == 2 and c.zcard(k.retry) == 1, 20, "the dead and retry sets")
    for command in (["stats"], ["stats", "--json"], ["retry-dead"], ["clear-retries"]):
        out = _gj(*command, "--redis-url", url, "--namespace", ns.namespace)
        assert out.returncode == 0, (command, out.stderr)
    assert survivor.stop() == 0
    return doomed, survivor, c


def test_requirepass_works_and_the_password_never_shows(redis_server, worker_at, ns, tkey):
    secret = "pw-" + uuid.uuid4().hex
    server = redis_server(password=secret)
    url = server.url
    assert secret in url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url.replace(secret, "wrong")).ping()
    doomed, survivor, c = _exercise(url, ns, worker_at, tkey, "-v")
    logs = doomed.output() + survivor.output()
    assert "redis://:***@127.0.0.1" in logs
    outputs = [
        _gj("stats", "--redis-url", url, "--namespace", ns.namespace),
        _gj("stats", "--json", "--redis-url", url, "--namespace", ns.namespace),
        _gj("enqueue", "x", "--redis-url", url.replace(secret, secret + "-wrong")),
        _gj("stats", "--redis-url", url.replace(str(server.port), "1")),
    ]
    assert [o.returncode for o in outputs] == [0, 0, 1, 1]
    assert "invalid username-password" in outputs[2].stderr and "Traceback" not in outputs[2].stderr
    stored = "".join(
        str(v) for key in c.scan_iter(f"{ns.namespace}:*") if c.type(key) == "hash" for v in c.hgetall(key).values()
    )
    for text in [logs, stored, *(o.stdout + o.stderr for o in outputs)]:
        assert secret not in text
    server.stop()
    with pytest.raises(client_mod.EnqueueError) as exc:
        jobs.record.enqueue(tkey("x"), "y")
    assert secret not in str(exc.value) and ":***@" in str(exc.value)


def acl_server(redis_server, ns):
    """A private Redis whose default user is off: `jiggler`, limited to the namespace (the server's URL logs in
    as it), and `admin` with every right, to look. Returns the server and an admin client."""
    admin_pw, user_pw = uuid.uuid4().hex, uuid.uuid4().hex
    server = redis_server(
        username="jiggler",
        password=user_pw,
        directives=[
            "user default off",
            f"user admin on >{admin_pw} ~* &* +@all",
            f"user jiggler on >{user_pw} {worker_acl(ns.namespace)}",
        ],
    )
    return server, server.client(f"redis://admin:{admin_pw}@127.0.0.1:{server.port}/0")


def test_an_acl_user_limited_to_the_namespace_is_enough(redis_server, worker_at, ns, tkey):
    server, admin = acl_server(redis_server, ns)
    _exercise(server.url, ns, worker_at, tkey)
    denied = admin.execute_command("ACL", "LOG")
    assert not denied, f"the worker or a command was refused: {denied}"
    user = server.client()
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.get("other-app:secret")
    for command in (
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "dir"),
        ("SHUTDOWN",),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command(*command)
    assert admin.dbsize() > 0  # the user wrote its keys, all under the namespace
    assert all(k.startswith(ns.namespace + ":") for k in admin.scan_iter("*"))


def test_an_acl_user_limited_to_the_namespace_can_run_periodic_entries(redis_server, worker_at, ns, tkey):
    server, admin = acl_server(redis_server, ns)
    env = {"JIGGLER_TEST_CRON": "parked", "JIGGLER_TEST_CRON_KEY": tkey("cron")}
    w = worker_at(server.url, "-r", "tests.cron_jobs", "--heartbeat-interval", "0.5", env=env)
    wait_for(lambda: admin.llen(f"{ns.namespace}:queue:cron-parked") >= 2, 20, "two fire times")
    out = _gj("cron", "--json", "--redis-url", server.url, "--namespace", ns.namespace)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["name"] == "every-second", out.stderr
    assert w.stop() == 0
    denied = admin.execute_command("ACL", "LOG")
    assert not denied, f"the scheduler or `gjiggler cron` was refused: {denied}"


def _limiters() -> None:
    """Every limiter path in this process: take, wait (BLPOP) until OverLimit, release, and the rate limiters."""
    concurrent = limits.concurrent("acl-c", 1, wait_timeout=0.3)
    token = concurrent.acquire()
    with pytest.raises(limits.OverLimit):
        concurrent.acquire()
    concurrent.release(token)
    with limits.window("acl-w", 5, per=60), limits.bucket("acl-b", 5, per=60):
        pass


def _pages(jid: str, bid: str, dead_key: str) -> list[tuple[str, int]]:
    """Every dashboard page, and its actions, as the ACL user; (path, status) of those that did not answer 2xx/3xx."""
    web = Browser(create_app())
    paths = ["/", "/busy", "/queues", "/queues/default", "/scheduled", "/retries", "/dead", f"/dead/{dead_key}"]
    paths += ["/metrics", f"/metrics/{fault_jobs.two_at_a_time.name}", "/batches", f"/batches/{bid}", "/cron"]
    paths += ["/limits", "/jobs", f"/jobs/{jid}", "/stats.json"]
    bad = [(p, page.code) for p in paths if (page := web.get(p)).code >= 400]
    actions = [
        ("/retries", {"bulk": "retry-all"}),
        ("/dead", {"retry": dead_key}),
        ("/queues/default", {"bulk": "clear"}),
    ]
    bad += [(p, page.code) for p, form in actions if (page := web.post(p, form)).code >= 400]
    return bad


def _exercise_features(url: str, ns, worker_at, rec: redis.Redis, tkey) -> None:
    """What issue 25 found missing from the rule: limiters (in a job, `@job(concurrency=N)` with a refused job
    parked and woken, in this process), the recovery that frees a dead worker's slots, results, cancellation,
    unique jobs, batches, wait_replicas' WAIT, api.Limits, every `gjiggler` reading command, the dashboard.
    The jobs record into `rec`, another Redis, so that only jiggler_gevent's own commands reach this one."""
    _use(url, ns)
    back = rec.connection_pool.connection_kwargs
    home = f"redis://{back['host']}:{back['port']}/{back.get('db', 0)}"
    load = ("-r", "tests.result_jobs", *FAST)
    doomed = worker_at(url, "-c", "4", *load)
    fault_jobs.one_at_a_time.enqueue(home, tkey("slot"), 60)  # its slot is freed by the recovery of its worker
    wait_for(lambda: rec.llen(tkey("slot")) == 1, 20, "the job holding the slot")
    survivor = worker_at(url, "-c", "6", "-q", "default", "-q", "other", *load)  # several queues: BZPOPMIN
    doomed.kill()
    wait_for(lambda: rec.llen(tkey("slot")) == 2, 20, "the killed worker's job run again")
    fault_jobs.hold_limiter.enqueue_bulk([(home, tkey("x"), "x", 2, 0.2)] * 4)
    fault_jobs.two_at_a_time.enqueue_bulk([(home, tkey("two"), 0.5)] * 3)  # the third is refused, parked, woken
    assert fault_jobs.mark.set(unique_for=60).enqueue(home, tkey("u"))
    assert fault_jobs.mark.set(unique_for=60).enqueue(home, tkey("u")) is None
    _limiters()
    assert api.Job(result_jobs.give.enqueue(tkey("g"), 2)).result(10) == 2
    running = result_jobs.sleep_long.enqueue(tkey("long"), 60)
    wait_for(lambda: api.Job(running).status == "running", 20, "the long job running")
    assert api.Job(running).cancel()
    later = result_jobs.give.enqueue_in(3600, tkey("later"), 1)
    ended = fault_jobs.batch_ended
    batch = Batch(description="acl", on_success=ended, on_complete=ended, callback_args=(home, tkey("cb")))
    with batch:
        fault_jobs.mark.enqueue_bulk([(home, tkey("b"))] * 3)
    fault_jobs.mark_then_fail.enqueue(home, tkey("died"))
    wait_for(lambda: rec.llen(tkey("x")) == 4 and rec.llen(tkey("two")) == 3, 30, "the limited jobs")
    wait_for(lambda: api.Job(running).status == "cancelled", 20, "the running job cancelled")
    wait_for(lambda: rec.llen(tkey("cb")) == 2 and len(api.DeadSet()) == 1, 30, "the batch and the dead job")
    config.configure(wait_replicas=1, wait_timeout=0.1)
    with pytest.raises(client_mod.EnqueueError, match="acknowledged"):  # WAIT ran, and no replica answered
        fault_jobs.mark.enqueue(home, tkey("w"))
    config.configure(wait_replicas=0)
    assert {x.name for x in api.Limits()} >= {"acl-c", "acl-w", "acl-b", "x"}
    options = ("--redis-url", url, "--namespace", ns.namespace)
    commands = [["limits", "--json"], ["batches"], ["batch", batch.bid], ["status", running], ["cancel", later]]
    commands += [["metrics", "--json"], ["cron"], ["stats", "--json"]]
    for command in commands:
        out = _gj(*command, *options)
        assert out.returncode == 0, (command, out.stderr)
    [dead] = api.DeadSet()
    assert _pages(running, batch.bid, f"{dead.jid}@{dead.score!r}") == []
    assert survivor.stop() == 0


def test_an_acl_user_limited_to_the_namespace_can_use_every_feature(redis_server, worker_at, ns, r, tkey):
    """Every path as a user with acl.rule(): no command refused, and none counted by Redis outside the rule."""
    server, admin = acl_server(redis_server, ns)
    admin.config_resetstat()
    _exercise_features(server.url, ns, worker_at, redis.Redis.from_url(ns.url, decode_responses=True), tkey)
    denied = admin.execute_command("ACL", "LOG")
    assert not denied, f"a command was refused: {denied}"
    used = {name.removeprefix("cmdstat_") for name in admin.info("commandstats")}
    assert used - set(acl.commands()) <= {"acl|log", "info", "config|resetstat"}  # those are the admin's own
    assert all(k.startswith(ns.namespace + ":") for k in admin.scan_iter("*"))


def test_the_docs_give_the_derived_acl_rule():
    page = (ROOT / "docs" / "security.md").read_text()
    block = page.split("ACL SETUSER jiggler on >PASSWORD ", 1)[1].split("```", 1)[0]
    assert " ".join(block.split()) == acl.rule("jiggler")
    assert {"pttl", "ltrim", "blpop", "zcount", "hgetall", "lpop"} <= set(acl.commands())  # issue 25, item 3


def test_tls_with_a_generated_ca(redis_server, worker_at, ns, tkey):
    server = redis_server(tls=True)
    assert server.url.startswith("rediss://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()  # plaintext is refused
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url.split("?")[0], socket_timeout=2).ping()  # an unknown CA is refused
    _exercise(server.url, ns, worker_at, tkey)
    assert config.redis_client(server.url).llen(tkey("ran")) == 4


def test_tls_with_password_and_acl_together(redis_server, worker_at, ns, tkey):
    pw = uuid.uuid4().hex
    server = redis_server(
        tls=True,
        username="jiggler",
        password=pw,
        directives=["user default off", f"user jiggler on >{pw} {worker_acl(ns.namespace)}"],
    )
    assert server.url.startswith(f"rediss://jiggler:{pw}@")
    _use(server.url, ns)
    jobs.record.enqueue(tkey("r"), "x")
    w = worker_at(server.url, "-c", "2")
    c = config.redis_client(server.url)
    wait_for(lambda: c.llen(tkey("r")) == 1, 20, "the job over TLS with an ACL user")
    assert w.stop() == 0 and pw not in w.output()


# -- no pickle, no eval, no import by payload -----------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle", "yaml"}


def _package_sources():
    return sorted(p for p in (ROOT / "jiggler_gevent").rglob("*.py"))


def test_no_pickle_marshal_eval_or_dynamic_import_in_the_package():
    problems = []
    for path in _package_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                names = [node.func.id]
            else:
                continue
            problems += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n in FORBIDDEN_MODULES or n in ("eval", "exec")
            ]
    assert not problems, problems


def test_modules_are_imported_only_from_the_command_line_or_django_settings():
    """A payload's name is looked up in the registry; the only dynamic imports are -r modules and Django apps."""
    for path in _package_sources():
        tree = ast.parse(path.read_text(), str(path))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
                if name in ("import_module", "__import__"):
                    allowed = func.name == "import_user_modules" or "contrib/django" in path.as_posix()
                    assert allowed, f"{path.relative_to(ROOT)}:{call.lineno} imports from {func.name}()"


def test_what_a_worker_stores_is_plain_json(ns, r, start_worker, tkey):
    jobs.always_fail.enqueue(tkey("failed"))
    r.lpush(ns.keys.queue("default"), "not json")
    w = start_worker("-r", "tests.fault_jobs", "-c", "1")
    wait_for(lambda: r.zcard(ns.keys.dead) == 2, 15, "the jobs")
    w.stop()
    for raw in r.zrange(ns.keys.dead, 0, -1):  # what is stored is plain JSON
        assert isinstance(json.loads(raw), dict)


def test_redacted_hides_every_form_of_password():
    for url in (
        "redis://:s3cr3t@h:1/0",
        "redis://user:s3cr3t@h/0",
        "rediss://u:s3cr3t@h:6380/0?ssl_ca_certs=/x",
        "unix://:s3cr3t@/tmp/redis.sock?db=1",
    ):
        out = config.redacted(url)
        assert "s3cr3t" not in out and "***" in out, out
