"""The Django integration, through the example project in examples/django_project (PostgreSQL, Redis).

Django runs only in subprocesses (`manage.py ...`), as in production: the worker is `manage.py gjiggler`,
orders are placed by the project's own management command and view.

Each test that runs the project runs twice: on psycopg 3, which Django's `postgresql` backend picks whenever
it can import it (it is installed here), and on psycopg2, with psycopg 3 hidden from the subprocesses
(`without_psycopg3`), as on a machine where only psycopg2 is installed.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import click
import pytest
from django.core.exceptions import ImproperlyConfigured

from jiggler_gevent import api, options
from jiggler_gevent import payload as payload_mod
from jiggler_gevent.cli import worker as worker_command
from jiggler_gevent.client import Client
from jiggler_gevent.contrib.django import conf
from tests.conftest import ROOT, wait_for
from tests.pg import PgDatabase, max_overlap

PROJECT = ROOT / "examples" / "django_project"
TABLES = "orders_order, orders_shipment, orders_report"


class Shop:
    """The example project on a test database and the test namespace, with the driver Django should use."""

    def __init__(self, db, env: dict, driver: str = "psycopg") -> None:
        self.db, self.env, self.driver = db, env, driver
        self.procs: list[subprocess.Popen] = []
        self.logs: list[object] = []

    def manage(self, *args: str, timeout: float = 60) -> str:
        """Run `manage.py ARGS` to completion; its stdout (fails the test on a non-zero exit)."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def gjiggler(self, *args: str) -> subprocess.Popen:
        """Start `manage.py gjiggler ARGS`; its output goes to test-artifacts/."""
        log_path = ROOT / "test-artifacts" / f"django-{uuid.uuid4().hex[:8]}.log"
        log_path.parent.mkdir(exist_ok=True)
        log = open(log_path, "w+")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "gjiggler", *args],
            cwd=PROJECT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def count(self, table: str) -> int:
        return self.db.query(f"SELECT count(*) FROM {table}")[0][0]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for log in self.logs:
            log.close()


def output(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def shop_db(pg_create_database, redis_url: str):
    """A database for the example project, migrated once per module."""
    db = pg_create_database("shop")
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=redis_url, **db.env)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    Shop(db, env).manage("migrate", "--verbosity", "0")
    return db


@pytest.fixture(scope="session")
def without_psycopg3(tmp_path_factory) -> str:
    """A folder which, first on PYTHONPATH, makes `import psycopg` fail as it does when psycopg 3 is not installed:
    the ModuleNotFoundError that Django's backend catches to fall back to psycopg2 (psycopg_pool goes with it)."""
    folder = tmp_path_factory.mktemp("without_psycopg3")
    (folder / "psycopg").mkdir()
    (folder / "psycopg" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg' (hidden by tests/test_django.py)\", name='psycopg')\n"
    )
    return str(folder)


def shop_on(driver: str, ns, shop_db, redis_url: str, without_psycopg3: str) -> Shop:
    """The project on the test namespace, with psycopg 3 ("psycopg") or psycopg2 (psycopg 3 hidden from its
    processes)."""
    pythonpath = str(ROOT) if driver == "psycopg" else os.pathsep.join([without_psycopg3, str(ROOT)])
    env = dict(os.environ, PYTHONPATH=pythonpath, REDIS_URL=redis_url, JIGGLER_NAMESPACE=ns.namespace, **shop_db.env)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return Shop(shop_db, env, driver)


@pytest.fixture(params=["psycopg", "psycopg2"])
def shop(request, ns, shop_db, redis_url: str, without_psycopg3: str) -> Iterator[Shop]:
    """The project for one test, on psycopg 3 or on psycopg2 (shop_on), its tables emptied."""
    shop_db.query(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    s = shop_on(request.param, ns, shop_db, redis_url, without_psycopg3)
    yield s
    s.close()


def wait_until_started(proc: subprocess.Popen) -> None:
    wait_for(lambda: "started" in output(proc) or proc.poll() is not None, 30, "the worker to start")
    assert proc.poll() is None, output(proc)


# ---------------------------------------------------------------------------------------------------------


def test_jiggler_settings_mirror_the_worker_options() -> None:
    keys = set(options.SETTINGS)
    assert keys == {
        "REDIS_URL",
        "NAMESPACE",
        "CONCURRENCY",
        "QUEUES",
        "STRICT",
        "TIMEOUT",
        "PROCESSES",
        "PREEMPT",
        "POLL_INTERVAL",
        "HEARTBEAT_INTERVAL",
        "VERBOSE",
        "LOG_FORMAT",
        "JOB_LOG",
        "METRICS_PORT",
        "METRICS_HOST",
        "HEALTH_PORT",
        "HEALTH_HOST",
        "HEALTH_BLOCKED",
        "REQUIRES",
        "MAX_MEMORY",
        "MAX_JOBS",
        "WIRE",
        "WAIT_REPLICAS",
    }
    settings = {
        "CONCURRENCY": 7,
        "QUEUES": ["mail,3", ("default", 1)],
        "STRICT": True,
        "VERBOSE": False,
        "REDIS_URL": "redis://cache:6380/2",
        "REQUIRES": ["app.jobs"],
        "TIMEOUT": 4.5,
    }

    params = worker_command.make_context("worker", conf.worker_args(settings, [])).params
    assert params["concurrency"] == 7 and params["strict"] is True and params["verbose"] is False
    assert params["queues"] == (("mail", 3), ("default", 1))
    assert params["redis_url"] == "redis://cache:6380/2" and params["requires"] == ("app.jobs",)
    assert params["timeout"] == 4.5

    # an option on the command line replaces its setting, repeatable ones included
    params = worker_command.make_context(
        "worker", conf.worker_args(settings, ["-c", "3", "-q", "low", "--require=other.jobs"])
    ).params
    assert params["concurrency"] == 3 and params["queues"] == (("low", 1),) and params["requires"] == ("other.jobs",)
    assert params["strict"] is True and params["timeout"] == 4.5

    with pytest.raises(ImproperlyConfigured, match="CONCURENCY"):
        conf.worker_args({"CONCURENCY": 5}, [])
    with pytest.raises(click.BadParameter):
        worker_command.make_context("worker", conf.worker_args({"QUEUES": ["a:b"]}, []))


def test_importing_the_app_loads_neither_gevent_nor_redis() -> None:
    code = (
        "import sys, jiggler_gevent.contrib.django.apps, jiggler_gevent.contrib.django.conf; "
        "print(sorted(m for m in ('gevent', 'redis', 'psycogreen') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_worker_django_flag_needs_a_settings_module(redis_url: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "worker", "--django", "--redis-url", redis_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "DJANGO_SETTINGS_MODULE" in done.stderr


def test_gjiggler_runs_orm_jobs_once_and_leaves_no_connection(shop: Shop) -> None:
    assert "placed 30 order(s)" in shop.manage("place_orders", "30")
    # pushed from Django code with settings.JIGGLER only (no configure() in the project)
    assert len(api.Queue("default")) == 30

    proc = shop.gjiggler("--settings", "shop.settings", "-c", "10")
    wait_until_started(proc)
    wait_for(lambda: shop.count("orders_shipment") >= 30, 30, "30 shipments")

    rows = shop.db.query(
        "SELECT o.id, count(s.id), min(s.worker_pid), max(s.worker_pid) FROM orders_order o "
        "LEFT JOIN orders_shipment s ON s.order_id = o.id GROUP BY o.id ORDER BY o.id"
    )
    assert [(order, n) for order, n, _, _ in rows] == [(n, 1) for n in range(1, 31)], "one shipment per order"
    # manage.py exec'd the worker in place: the pid that ran the jobs is the one we started
    assert {pid for *_, low, high in rows for pid in (low, high)} == {proc.pid}

    # the command line (-c 10) won over CONCURRENCY=20; the queues came from settings.JIGGLER
    live = wait_for(lambda: [p for p in api.ProcessSet() if p.pid == proc.pid], 15, "the heartbeat")
    assert live[0].concurrency == 10 and live[0].queues == ["default", "reports"]

    wait_for(lambda: shop.db.connections() == 0, 10, "each job's connection to be closed after it")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)
    assert shop.db.connections() == 0
    assert shop.count("orders_shipment") == 30
    assert "Traceback" not in output(proc), output(proc)


def test_on_commit_pushes_a_job_only_when_the_transaction_commits(shop: Shop) -> None:
    assert "rolled back 5 order(s)" in shop.manage("place_orders", "5", "--rollback")
    assert shop.count("orders_order") == 0
    assert len(api.Queue("default")) == 0, "a rolled back transaction pushed a job"

    shop.manage("place_orders", "4")
    assert len(api.Queue("default")) == 4
    proc = shop.gjiggler("-c", "4")
    wait_until_started(proc)
    wait_for(lambda: shop.count("orders_shipment") >= 4, 30, "4 shipments")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)
    orders = shop.db.query("SELECT id FROM orders_order ORDER BY id")
    assert len(orders) == 4
    assert shop.db.query("SELECT order_id FROM orders_shipment ORDER BY order_id") == orders
    assert len(api.Queue("default")) == 0


def test_enqueue_on_commit_holds_an_enqueue_inside_a_transaction_until_it_commits(shop: Shop) -> None:
    assert "rolled back 5 order(s)" in shop.manage("place_orders", "5", "--direct", "--rollback")
    assert shop.count("orders_order") == 0
    assert len(api.Queue("default")) == 0, "ENQUEUE_ON_COMMIT: a rolled back transaction pushed a job"
    shop.manage("place_orders", "3", "--direct")
    assert len(api.Queue("default")) == 3
    shop.env["JIGGLER_ENQUEUE_ON_COMMIT"] = "0"  # without the setting, the same enqueue is pushed at once
    assert "rolled back 2 order(s)" in shop.manage("place_orders", "2", "--direct", "--rollback")
    assert len(api.Queue("default")) == 5 and shop.count("orders_order") == 3


def test_enqueue_on_commit_holds_a_debounced_enqueue_until_the_commit_too(shop: Shop) -> None:
    assert "rolled back 1 order(s)" in shop.manage("place_orders", "1", "--direct", "--recount", "--rollback")
    assert len(api.ScheduledSet()) == 0, "ENQUEUE_ON_COMMIT: a rolled back transaction pushed a debounced job"
    first = shop.manage("place_orders", "1", "--direct", "--recount").split("recount ")[1].split()[0]
    second = shop.manage("place_orders", "1", "--direct", "--recount").split("recount ")[1].split()[0]
    waiting = [entry.jid for entry in api.ScheduledSet()]
    assert waiting == [first], "one debounced job waits, with the jid of the first commit"
    assert second != first  # returned at once, before the commit found the first one waiting


def test_enqueue_on_commit_must_be_a_bool() -> None:
    conf.check({"ENQUEUE_ON_COMMIT": True})
    with pytest.raises(ImproperlyConfigured, match="ENQUEUE_ON_COMMIT"):
        conf.check({"ENQUEUE_ON_COMMIT": "yes"})


def test_a_view_enqueues_with_the_same_job_api(shop: Shop) -> None:
    script = (
        "from django.test import Client; c = Client(); "
        "print(*[c.post('/orders/', {'item': f'from view {n}'}).json()['id'] for n in range(3)])"
    )
    ids = [int(i) for i in shop.manage("shell", "--verbosity", "0", "-c", script).split()]
    assert [(i,) for i in ids] == shop.db.query("SELECT id FROM orders_order ORDER BY id") and len(ids) == 3
    pushed = sorted((e.name, e.args) for e in api.Queue("default"))
    assert pushed == [("orders.jobs.ship_order", [i]) for i in ids]


def _connections_held(db: PgDatabase, most: int) -> int:
    """The jobs' connections open now; a count over `most` is read again, and the lower of the two kept: a job's
    connection just closed is listed until its backend exits, while the same greenlet's next job has opened its
    own, so one reading can show one more than are open (an excess that lasts shows in both)."""
    count = db.connections()
    return min(count, db.connections()) if count > most else count


def test_connections_stay_at_one_per_running_job_and_sigterm_waits(shop: Shop) -> None:
    shop.manage("place_orders", "2")
    api.Queue("default").clear()
    proc = shop.gjiggler("-c", "5")
    wait_until_started(proc)

    client = Client()
    client.push_bulk(
        [payload_mod.build("orders.jobs.count_orders", [f"r{n}", 0.3], queue="reports", retries=0) for n in range(15)]
    )
    seen: list[int] = []

    def reports_done() -> bool:
        seen.append(_connections_held(shop.db, 5))
        return shop.count("orders_report") >= 15

    wait_for(reports_done, 30, "15 reports")
    assert 2 <= max(seen) <= 5, f"connections seen while 5 greenlets ran 15 jobs: max {max(seen)}"
    assert {r for (r,) in shop.db.query("SELECT DISTINCT orders FROM orders_report")} == {2}
    wait_for(lambda: shop.db.connections() == 0, 10, "the connections to be closed after the jobs")

    # SIGTERM while jobs hold connections: the worker waits for them (TIMEOUT=10 in settings), exits 0
    client.push_bulk(
        [payload_mod.build("orders.jobs.count_orders", [f"late{n}", 2.0], queue="reports", retries=0) for n in range(3)]
    )
    wait_for(lambda: shop.db.connections() == 3, 15, "three jobs in their queries")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)
    assert time.monotonic() - started < 10
    assert shop.count("orders_report") == 18, "the running jobs finished before the worker exited"
    # the jobs' backends exit once PostgreSQL sees the worker gone, a moment after it exited: polled
    wait_for(lambda: shop.db.connections() == 0, 10, "the jobs' connections to close with the worker")


def test_orm_queries_of_concurrent_jobs_overlap_on_either_driver(shop: Shop, r, tkey) -> None:
    # --preempt 0: no forced switch either, so queries overlap only if the driver waits cooperatively
    proc = shop.gjiggler("-c", "10", "--preempt", "0", "-r", "tests.django_jobs")
    wait_until_started(proc)
    key = tkey("queries")
    Client().push_bulk([payload_mod.build("tests.django_jobs.timed_query", [key, 0.5], retries=0) for _ in range(10)])
    wait_for(lambda: r.llen(key) >= 10, 30, "10 queries")
    found = [json.loads(item) for item in r.lrange(key, 0, -1)]

    # the worker's Django connection used the driver this run is about, and only that driver was loaded
    assert {(f["driver"], f["is_psycopg3"]) for f in found} == {(shop.driver, shop.driver == "psycopg")}
    loaded = {tuple(f["loaded"]) for f in found}
    assert loaded == ({("psycopg",)} if shop.driver == "psycopg" else {("psycogreen", "psycopg2")}), loaded
    # each job waited inside PostgreSQL while the others did too: 10 x 0.5 s would take 5 s one after another
    most = max_overlap([(f["started"], f["ended"]) for f in found])
    span = max(f["ended"] for f in found) - min(f["started"] for f in found)
    print(f"{len(found)} queries on {shop.driver}: at most {most} at once, all within {span:.2f}s")
    assert most >= 5 and span < 2.5, f"on {shop.driver}: at most {most} queries at once, all within {span:.2f}s"
    assert len({f["backend"] for f in found}) == 10, "a connection per job"

    wait_for(lambda: shop.db.connections() == 0, 10, "the jobs' connections to be closed")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)
    assert "Traceback" not in output(proc) and "WARNING" not in output(proc), output(proc)


@pytest.mark.parametrize("shop", ["psycopg"], indirect=True)
def test_djangos_psycopg_pool_caps_the_connections_the_jobs_share(shop: Shop, r, tkey) -> None:
    shop.env["SHOP_DB_POOL"] = "5"  # settings.py: OPTIONS = {"pool": {"min_size": 1, "max_size": 5}}
    proc = shop.gjiggler("-c", "10", "--preempt", "0", "-r", "tests.django_jobs")
    wait_until_started(proc)
    key = tkey("pooled")
    Client().push_bulk([payload_mod.build("tests.django_jobs.timed_query", [key, 0.5], retries=0) for _ in range(20)])
    wait_for(lambda: r.llen(key) >= 20, 30, "20 queries")
    found = [json.loads(item) for item in r.lrange(key, 0, -1)]

    assert {f["driver"] for f in found} == {"psycopg"}
    # 10 greenlets share 5 connections: 4 rounds of 0.5 s (10 s one after another), never more than 5 at once
    most = max_overlap([(f["started"], f["ended"]) for f in found])
    span = max(f["ended"] for f in found) - min(f["started"] for f in found)
    print(f"{len(found)} queries on {shop.driver}: at most {most} at once, all within {span:.2f}s")
    assert 3 <= most <= 5 and span < 4.0, f"at most {most} queries at once, all within {span:.2f}s"
    assert len({f["backend"] for f in found}) <= 5
    # the pool keeps its connections across jobs (CloseConnections gives them back); they go with the process
    assert 1 <= shop.db.connections() <= 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)
    wait_for(lambda: shop.db.connections() == 0, 10, "the pool's connections to close")
    assert "Traceback" not in output(proc) and "WARNING" not in output(proc), output(proc)
