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

from jiggler_gevent import client as client_mod
from jiggler_gevent import config
from tests import jobs
from tests.conftest import ROOT, wait_for

# The commands jiggler_gevent needs, worker and admin side (stats, web, set actions). The README lists the same.
WORKER_COMMANDS = (
    "ping hello auth select info "
    "multi exec discard evalsha script|load "
    "lpush rpush rpop rpoplpush blmove lrange lrem llen lindex bzpopmin "
    "sadd srem smembers "
    "zadd zrem zrange zrangebyscore zremrangebyscore zremrangebyrank zcard "
    "hset hget hgetall del exists expire pexpire get mget incrby "
    "set hmget time "
    "subscribe unsubscribe publish hincrby hsetnx sismember scard type zscore zscan expireat"
).split()


def worker_acl(namespace: str) -> str:
    """The ACL rule for a user that may run workers and admin commands on one namespace, and nothing else."""
    rule = f"resetkeys ~{namespace}:* resetchannels &{namespace}:* -@all "
    return rule + " ".join(f"+{c}" for c in WORKER_COMMANDS)


FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2", "-t", "1")


def _use(url: str, ns) -> None:
    config.configure(redis_url=url, namespace=ns.namespace)


def _gj(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _exercise(url: str, ns, worker_at, tkey, *extra: str) -> "tuple[object, object, redis.Redis]":
    """Every path a worker takes: a job that runs, one that fails into the retry set, one that dies, a scheduled
    one, a payload that cannot run, and the recovery of a SIGKILLed worker's jobs; the second worker listens on
    two queues, so it waits on NS:wake."""
    _use(url, ns)
    c = config.redis_client(url)
    k = ns.keys
    jobs.record.enqueue(tkey("ran"), "now")
    jobs.fail_times.enqueue(tkey("retried"), 5)
    jobs.always_fail.enqueue(tkey("died"))
    jobs.record.enqueue_in(0.3, tkey("ran"), "later")
    c.lpush(k.queue("default"), "not a payload")
    doomed = worker_at(url, "-c", "2", *FAST, *extra)
    wait_for(lambda: c.llen(tkey("ran")) == 2, 20, "the immediate and the scheduled job")
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


def test_tls_with_a_generated_ca(redis_server, worker_at, ns, tkey):
    server = redis_server(tls=True)
    assert server.url.startswith("rediss://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()  # plaintext is refused
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url.split("?")[0], socket_timeout=2).ping()  # an unknown CA is refused
    _exercise(server.url, ns, worker_at, tkey)
    assert config.redis_client(server.url).llen(tkey("ran")) == 2


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
