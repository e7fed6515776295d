"""Django's task framework on jiggler_gevent (contrib/django/tasks.py), through the example project in
examples/django_project: tasks enqueued by Django code (`manage.py shell`, tests/django_task_calls.py), run by
`manage.py gjiggler`, read back with get_result and refresh(). On Python 3.11 the framework is the django_tasks
backport on Django 5.2; on 3.12 and later, Django 6's django.tasks (CI runs this module there: conftest.CORE).
"""

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from jiggler_gevent import api
from tests.conftest import wait_for
from tests.test_django import Shop, output, shop_db, shop_on, wait_until_started, without_psycopg3  # noqa: F401

HOLD = "tests.django_task_calls.hold"  # a task's module path, as the dashboard and metrics show it
FRAMEWORK = "django.tasks" if sys.version_info >= (3, 12) else "django_tasks"


@pytest.fixture(params=["psycopg"])
def shop(request, ns, shop_db, redis_url: str, without_psycopg3: str) -> Iterator[Shop]:  # noqa: F811
    """The example project for one test: on psycopg 3, or on the driver a test names (`on_both_drivers`)."""
    s = shop_on(request.param, ns, shop_db, redis_url, without_psycopg3)
    yield s
    s.close()


# The tests whose Django code touches the database driver (results read and written around transactions) run on
# psycopg2 too; the rest once, on psycopg 3 (test_django.py covers both drivers throughout).
on_both_drivers = pytest.mark.parametrize("shop", ["psycopg", "psycopg2"], indirect=True)


def call(shop: Shop, name: str, *args: Any) -> dict[str, Any]:
    """Run tests/django_task_calls.NAME(*ARGS) in the project; the JSON it printed."""
    code = f"from tests.django_task_calls import {name}; {name}(*{args!r})"
    out = shop.manage("shell", "--verbosity", "0", "-c", code, timeout=90)
    return json.loads(out.strip().splitlines()[-1])


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, output(proc)


@on_both_drivers
def test_tasks_run_and_their_results_come_back_through_get_result(shop: Shop) -> None:
    proc = shop.gjiggler("-c", "5")
    wait_until_started(proc)
    seen = call(shop, "run_and_wait")
    stop(proc)

    assert seen["driver"] == shop.driver
    assert seen["first"] == ["READY"] * 4
    added, refused, context, prioritised = seen["read"]
    assert seen["refreshed"] == seen["read"], "refresh() and get_result() read the same"
    assert added["status"] == "SUCCESSFUL" and added["value"] == 5 and added["args"] == [2, 3]
    assert added["path"] == "orders.tasks.add" and added["queue"] == "default"
    assert added["enqueued_at"] <= added["started_at"] <= added["finished_at"]
    assert len(added["worker_ids"]) == 1 and added["worker_ids"][0].endswith(f":{proc.pid}")

    assert refused["status"] == "FAILED" and refused["value"] is None
    [error] = refused["errors"]
    assert error["path"] == "orders.tasks.OrderError"
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert "raise OrderError(reason)" in error["traceback"] and "OrderError: out of stock" in error["traceback"]
    # the worker counted it failed and buried it (retries=0), as any job that raised
    dead = [entry for entry in api.DeadSet() if entry.jid == refused["id"]]
    assert len(dead) == 1 and dead[0].error_class == "OrderError"

    assert context["status"] == "SUCCESSFUL"
    assert context["value"] == {"id": context["id"], "attempt": 1, "label": "ctx"}
    assert context["kwargs"] == {"label": "ctx"}

    # priority is kept with the task (and applied: test_priorities_order_the_tasks_of_one_queue)
    assert prioritised["priority"] == 7 and prioritised["value"] == 2 and prioritised["kwargs"] == {"a": 1, "b": 1}
    assert "OrderError: out of stock" in output(proc), "the worker logs the failure with its traceback"


def test_run_after_keeps_a_task_scheduled_until_then(shop: Shop) -> None:
    proc = shop.gjiggler("-c", "2", "--poll-interval", "0.2")
    wait_until_started(proc)
    seen = call(shop, "run_after", 2.0)
    stop(proc)

    assert seen["at_once"]["status"] == "READY"
    assert seen["at_once"]["id"] in seen["scheduled"], "the job waits in the scheduled set"
    assert seen["ended"]["status"] == "SUCCESSFUL" and seen["ended"]["value"] == 42
    assert seen["ended"]["started_at"] >= seen["due"], "the task started before its run_after"


def test_queue_name_routes_what_the_backend_refuses_pushes_nothing_and_a_cancel_fails_a_task(shop: Shop) -> None:
    seen = call(shop, "routing")

    assert seen["reports"]["queue"] == "reports" and seen["reports"]["status"] == "READY"
    assert seen["queues"] == {"default": [], "reports": [seen["reports"]["id"]], "nowhere": []}
    assert seen["refused"]["queue"].startswith("InvalidTask") and "nowhere" in seen["refused"]["queue"]
    assert seen["refused"]["arguments"].startswith("TypeError")
    assert seen["refused"]["missing"] == "TaskResultDoesNotExist"
    # a task whose job was cancelled before it ran is FAILED with jiggler's exception, never started
    cancelled = seen["cancelled"]
    assert cancelled["status"] == "FAILED" and cancelled["started_at"] is None and cancelled["worker_ids"] == []
    assert [e["path"] for e in cancelled["errors"]] == ["jiggler_gevent.errors.JobCancelled"]


def test_aenqueue_and_aget_result_from_asyncio(shop: Shop) -> None:
    seen = call(shop, "from_asyncio")

    assert seen["framework"] == FRAMEWORK
    assert seen["enqueued"]["status"] == "READY" and seen["read"]["status"] == "READY"
    assert seen["read"]["id"] == seen["enqueued"]["id"] and seen["read"]["args"] == [4, 5]
    assert [entry.jid for entry in api.Queue("default")] == [seen["enqueued"]["id"]]


@on_both_drivers
def test_enqueue_on_commit_pushes_a_task_when_its_transaction_commits_only(shop: Shop) -> None:
    seen = call(shop, "on_commit")  # settings.py: JIGGLER["ENQUEUE_ON_COMMIT"] is on

    assert seen["driver"] == shop.driver
    assert seen["inside_rolled"] == 0 and seen["rolled"] == "does not exist"
    assert seen["inside_kept"] == 0, "pushed before its transaction committed"
    assert seen["after_commit"] == [seen["kept"]["id"]] and seen["kept"]["status"] == "READY"


def test_a_task_has_its_record_if_and_only_if_its_job_was_pushed(shop: Shop, r, ns) -> None:
    seen = call(shop, "interrupted_pushes")  # no worker: the pushed jobs wait

    interrupted, pushed = seen["interrupted"], seen["pushed"]
    assert len(interrupted) == 2 and len(pushed) == 2
    statuses = {jid: api.Job(jid).status for jid in interrupted + pushed}
    recorded = {jid for jid in statuses if r.exists(ns.keys.django_task(jid))}
    # a push interrupted after the task was prepared (now, and scheduled) leaves nothing: no phantom READY task
    assert [statuses[jid] for jid in interrupted] == ["unknown", "unknown"] and not recorded & set(interrupted)
    assert seen["found"][:2] == ["does not exist", "does not exist"]
    # one pushed now waits in its queue, one scheduled in the scheduled set, each with its record
    assert [statuses[jid] for jid in pushed] == ["queued", "scheduled"] and recorded == set(pushed)
    assert seen["found"][2:] == ["READY", "READY"]
    assert sorted(r.scan_iter(ns.keys.django_task("*"))) == sorted(ns.keys.django_task(jid) for jid in pushed)


def test_a_push_refused_by_redis_raises_and_leaves_neither_record_nor_job(shop: Shop, redis_server) -> None:
    server = redis_server(directives=["min-replicas-to-write 1"])  # no replica: Redis refuses every write
    shop.env["REDIS_URL"] = server.url
    errors = call(shop, "refused_pushes")

    assert len(errors) == 2, errors
    for error in errors:
        assert error.startswith("EnqueueError: could not push 1 job(s) (jiggler_gevent.django_task)"), error
        assert "NOREPLICAS" in error or "NoReplicas" in error, error
    assert server.client().dbsize() == 0, "a record or a job was written"


def test_a_task_whose_worker_was_killed_runs_again_as_its_next_attempt(shop: Shop, r, ns) -> None:
    fast = ("-c", "2", "--heartbeat-interval", "0.2")  # presumed dead after 12 missed beats: 2.4 s
    first = shop.gjiggler(*fast)
    wait_until_started(first)
    result_id = call(shop, "enqueue_linger")["id"]
    # the record names the first worker as its run starts (status "running" comes earlier, with the fetch)
    wait_for(lambda: r.hget(ns.keys.django_task(result_id), "worker_ids"), 30, "the task's first attempt to start")
    first.kill()
    first.wait(10)

    second = shop.gjiggler(*fast)
    wait_until_started(second)
    seen = call(shop, "wait_for_result", result_id)
    stop(second)

    assert seen["status"] == "SUCCESSFUL"
    assert seen["value"]["attempt"] == 2, "context.attempt counts the run the SIGKILL cut short"
    pids = [worker.rsplit(":", 1)[1] for worker in seen["worker_ids"]]
    assert pids == [str(first.pid), str(second.pid)] and seen["value"]["workers"] == seen["worker_ids"]


def test_priorities_order_the_tasks_of_one_queue(shop: Shop) -> None:
    low, plain, high = call(shop, "enqueue_by_priority")
    proc = shop.gjiggler("-c", "1")
    wait_until_started(proc)
    results = call(shop, "read_results", low, plain, high)
    stop(proc)

    assert [r["status"] for r in results] == ["SUCCESSFUL"] * 3
    started = sorted(results, key=lambda r: r["started_at"])
    assert [r["priority"] for r in started] == [10, 0, -5], "one at a time, the highest priority first"


def test_backend_declares_what_it_supports(shop: Shop) -> None:
    flags = call(shop, "backend_flags")

    assert flags["supports_defer"] is True and flags["supports_get_result"] is True
    assert flags["supports_priority"] is True
    assert flags["supports_async_task"] is True


def test_async_tasks_run_on_the_workers_loop_and_a_cancel_reaches_them(shop: Shop) -> None:
    proc = shop.gjiggler("-c", "5")
    wait_until_started(proc)
    seen = call(shop, "async_tasks")
    stop(proc)

    assert seen["quick"]["status"] == "SUCCESSFUL" and seen["quick"]["value"] == 9
    cancelled = seen["cancelled"]
    assert cancelled["status"] == "FAILED"
    assert [e["path"] for e in cancelled["errors"]] == ["jiggler_gevent.errors.CancelJob"]  # raised while it ran
    assert cancelled["finished_at"] - cancelled["started_at"] < 30, "the cancel stopped the 60 s await"


def test_a_task_shows_under_its_own_path_with_its_own_arguments_everywhere(shop: Shop, r) -> None:
    from jiggler_gevent import config
    from tests.test_web import Browser, create_app

    key = f"{config.current().namespace}:release"  # under the test namespace, so it is deleted after
    ids = call(shop, "enqueue_to_show", key)  # no worker yet: they wait in their queues
    web = Browser(create_app())
    queued = {e.jid: e for e in [*api.Queue("default"), *api.Queue("reports")]}
    held, plain = queued[ids["held"]], queued[ids["plain"]]
    assert (held.display_name, held.display_args, held.display_kwargs) == (HOLD, [key], {"note": "shown"})
    assert held.name == "jiggler_gevent.django_task" and held.args[0] == ids["held"], "name and args are the wire's"
    assert (
        (plain.display_name, plain.display_args) == (plain.name, plain.args) == ("orders.jobs.count_orders", ["shown"])
    )
    page = web.get("/queues/default").text
    assert f"<b>{HOLD}</b>" in page and "<b>orders.tasks.refuse</b>" in page and "data-wrapper" in page
    assert f"[&quot;{key}&quot;] {{&quot;note&quot;: &quot;shown&quot;}}" in page, "the task's args, then its kwargs"
    assert "orders.tasks.add" not in page and "&quot;path&quot;" not in page, "not the wrapper's spec"

    proc = shop.gjiggler("-c", "5", "--heartbeat-interval", "0.2")  # the task holds its worker 8 s at most
    wait_until_started(proc)
    wait_for(lambda: api.Job(ids["held"]).status == "running", 30, "the held task to start")

    def held_running() -> list[dict[str, Any]]:
        return [j for p in api.ProcessSet() for j in p.jobs if j["payload"]["jid"] == ids["held"]]

    [running] = wait_for(held_running, 30, "the heartbeat to list it")
    assert (running["display_name"], running["display_args"], running["display_kwargs"]) == (
        HOLD,
        [key],
        {"note": "shown"},
    )
    busy = web.get("/busy").text
    assert f"<b>{HOLD}</b>" in busy and f"[&quot;{key}&quot;]" in busy
    r.rpush(key, "go")
    dead = wait_for(lambda: list(api.DeadSet()), 30, "the failed task to be buried")
    assert [(e.display_name, e.display_args, e.jid) for e in dead] == [
        ("orders.tasks.refuse", ["out of stock"], ids["failed"])
    ]
    dead_page = web.get("/dead").text
    assert "<b>orders.tasks.refuse</b>" in dead_page and "[&quot;out of stock&quot;]" in dead_page
    href = re.search(r'href="(/dead/[^"]+)"', dead_page).group(1)
    detail = web.get(href.replace("%40", "@")).text
    assert "<dd>orders.tasks.refuse</dd>" in detail and "<dt>Run by</dt><dd>jiggler_gevent.django_task</dd>" in detail
    wait_for(lambda: api.Job(ids["held"]).status == "done", 30, "the held task to end")
    wait_for(lambda: not len(api.Queue("reports")), 30, "the plain job to start (the clean stop lets it end)")
    stop(proc)  # a clean stop writes the per-job metrics

    runs = {j.name: (j.runs, j.failures) for j in api.Metrics(10)}
    assert runs == {HOLD: (1, 0), "orders.tasks.refuse": (1, 1), "orders.jobs.count_orders": (1, 0)}
    log = output(proc)
    assert re.search(rf"done {re.escape(HOLD)} jid={ids['held']} in \d+\.\d+s", log), log
    assert re.search(rf"fail orders\.tasks\.refuse jid={ids['failed']} after", log), log
    assert re.search(r"done orders\.jobs\.count_orders jid=\w+ in \d+\.\d+s", log), "a plain job's line is as it was"


def test_backend_options_are_checked() -> None:
    from jiggler_gevent.contrib.django.tasks import _check_params

    assert _check_params({"OPTIONS": {"RESULT_TTL": 60}}) == 60.0
    with pytest.raises(ImproperlyConfigured, match="RESULT_TTL"):
        _check_params({"OPTIONS": {"RESULT_TTL": 0}})
    with pytest.raises(ImproperlyConfigured, match="RESUTL_TTL"):
        _check_params({"OPTIONS": {"RESUTL_TTL": 60}})
    with pytest.raises(ImproperlyConfigured, match="a:b"):
        _check_params({"QUEUES": ["a:b"]})
