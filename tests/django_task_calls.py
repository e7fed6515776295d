"""What tests/test_django_tasks.py runs inside the example project (`manage.py shell -c ...`): Django task calls, each
printing one JSON line for the test to read. Django runs only in those subprocesses, as in test_django.py."""

import asyncio
import datetime as dt
import json
import time
from typing import Any

from django.db import connection, transaction
from orders import tasks

from jiggler_gevent import api, middleware
from jiggler_gevent.contrib.django.task_record import framework, framework_part


@framework().task(takes_context=True)
def linger(context: Any) -> dict[str, Any]:
    """A task whose first attempt runs for a minute (long enough to kill its worker); later ones return at once."""
    if context.attempt == 1:
        time.sleep(60)
    return {"attempt": context.attempt, "workers": context.task_result.worker_ids}


@framework().task()
def hold(key: str, *, note: str) -> str:
    """A task that runs until the list `key` in Redis has an item (the test pushes it), and returns that item."""
    from jiggler_gevent import config

    released = config.redis_client(config.current().url).blpop([key], timeout=8)  # within the job's 10 s timeout
    if released is None:
        raise TimeoutError(f"nothing was pushed to {key} ({note})")
    return str(released[1])


@framework().task()
async def await_cancel(key: str) -> None:
    """An async task that says it is running (an item on the list `key`, pushed from inside the coroutine), then awaits
    for a minute: long enough for the test to cancel it there."""
    import redis.asyncio

    from jiggler_gevent import config

    async with redis.asyncio.Redis.from_url(config.current().url) as client:
        await client.rpush(key, "awaiting")
    await asyncio.sleep(60)


def _result(task_result: Any) -> dict[str, Any]:
    finished = task_result.is_finished and task_result.status.name == "SUCCESSFUL"
    return {
        "id": task_result.id,
        "status": task_result.status.name,
        "value": task_result.return_value if finished else None,
        "errors": [{"path": e.exception_class_path, "traceback": e.traceback} for e in task_result.errors],
        "priority": task_result.task.priority,
        "queue": task_result.task.queue_name,
        "path": task_result.task.module_path,
        "args": task_result.args,
        "kwargs": task_result.kwargs,
        "worker_ids": task_result.worker_ids,
        "started_at": task_result.started_at.timestamp() if task_result.started_at else None,
        "finished_at": task_result.finished_at.timestamp() if task_result.finished_at else None,
        "enqueued_at": task_result.enqueued_at.timestamp() if task_result.enqueued_at else None,
    }


def _wait(results: list[Any], timeout: float = 30) -> None:
    """Refresh each result until it has finished (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    for result in results:
        while not result.is_finished:
            assert time.monotonic() < deadline, f"task {result.id} still {result.status} after {timeout}s"
            time.sleep(0.05)
            result.refresh()


def run_and_wait() -> None:
    """Enqueue a task of each kind, refresh until each ended, and print them as get_result reads them."""
    enqueued = [
        tasks.add.enqueue(2, 3),
        tasks.refuse.enqueue("out of stock"),
        tasks.whoami.enqueue(label="ctx"),
        tasks.add.using(priority=7).enqueue(a=1, b=1),
    ]
    first = [r.status.name for r in enqueued]
    _wait(enqueued)
    read = [tasks.add.get_backend().get_result(r.id) for r in enqueued]
    out = {"first": first, "refreshed": [_result(r) for r in enqueued], "read": [_result(r) for r in read]}
    print(json.dumps({**out, "driver": _driver()}))


def _driver() -> str:
    """The database driver Django uses in this process: psycopg (3) or psycopg2."""
    return str(connection.Database.__name__)


def run_after(seconds: float) -> None:
    """Enqueue a task due `seconds` from now; print its state at once, then once it ended."""
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    result = tasks.add.using(run_after=due).enqueue(20, 22)
    scheduled = [entry.jid for entry in api.ScheduledSet()]
    at_once = _result(tasks.add.get_result(result.id))
    _wait([result])
    print(json.dumps({"due": due.timestamp(), "at_once": at_once, "scheduled": scheduled, "ended": _result(result)}))


def routing() -> None:
    """Enqueue on the reports queue; try an unknown queue and arguments that are not JSON; cancel a waiting task;
    print what was pushed and what get_result reads."""
    reports = tasks.count_orders.enqueue("nightly")
    refused = {}
    try:
        tasks.add.using(queue_name="nowhere").enqueue(1, 2)
    except Exception as exc:
        refused["queue"] = f"{type(exc).__name__}: {exc}"
    try:
        tasks.add.enqueue(object(), 2)
    except Exception as exc:
        refused["arguments"] = f"{type(exc).__name__}: {exc}"
    try:
        tasks.add.get_backend().get_result("no-such-id")
    except Exception as exc:
        refused["missing"] = type(exc).__name__
    queues = {name: [entry.jid for entry in api.Queue(name)] for name in ("default", "reports", "nowhere")}
    cancelled = tasks.add.enqueue(3, 4)
    api.Job(cancelled.id).cancel()
    cancelled.refresh()
    out = {"reports": _result(reports), "refused": refused, "queues": queues, "cancelled": _result(cancelled)}
    print(json.dumps(out))


def from_asyncio() -> None:
    """aenqueue and aget_result from asyncio.run: print the result as enqueued and as read."""

    async def main() -> tuple[Any, Any]:
        result = await tasks.add.aenqueue(4, 5)
        return result, await tasks.add.aget_result(result.id)

    enqueued, read = asyncio.run(main())
    print(json.dumps({"enqueued": _result(enqueued), "read": _result(read), "framework": framework().__name__}))


def on_commit() -> None:
    """Enqueue inside a transaction that rolls back, then inside one that commits; print what was pushed when."""

    class RolledBack(Exception):
        pass

    seen: dict[str, Any] = {}
    try:
        with transaction.atomic():
            rolled = tasks.add.enqueue(1, 1)
            seen["inside_rolled"] = len(api.Queue("default"))
            raise RolledBack
    except RolledBack:
        pass
    missing = framework_part("exceptions").TaskResultDoesNotExist
    try:
        tasks.add.get_result(rolled.id)
        seen["rolled"] = "found"
    except missing:
        seen["rolled"] = "does not exist"
    with transaction.atomic():
        kept = tasks.add.enqueue(2, 2)
        seen["inside_kept"] = len(api.Queue("default"))
    seen["after_commit"] = [entry.jid for entry in api.Queue("default")]
    seen["kept"] = _result(tasks.add.get_result(kept.id))
    print(json.dumps({**seen, "driver": _driver()}))


def enqueue_linger() -> None:
    """Enqueue `linger`; print its id."""
    print(json.dumps({"id": linger.enqueue().id}))


def wait_for_result(result_id: str) -> None:
    """Refresh a result until its task ended; print it."""
    result = linger.get_result(result_id)
    _wait([result], timeout=60)
    print(json.dumps(_result(result)))


def enqueue_by_priority() -> None:
    """Enqueue three tasks of different priorities (no worker runs yet); print their ids, lowest priority first."""
    print(json.dumps([tasks.add.using(priority=p).enqueue(p, 0).id for p in (-5, 0, 10)]))


def read_results(*ids: str) -> None:
    """Print each task's result as get_result reads it, once it has ended."""
    results = [tasks.add.get_result(i) for i in ids]
    _wait(results)
    print(json.dumps([_result(r) for r in results]))


def backend_flags() -> None:
    """Print what the backend declares."""
    backend = tasks.add.get_backend()
    print(json.dumps({name: getattr(backend, name) for name in dir(backend) if name.startswith("supports_")}))


def async_tasks() -> None:
    """Enqueue async tasks (one that returns, one cancelled while it awaits); print what get_result reads of each once
    they ended. The cancel waits for the task's own word that its coroutine runs: a job the worker has fetched may not
    have started its task yet, and a cancel there ends it before it ran (JobCancelled, not CancelJob)."""
    from jiggler_gevent import config

    key = f"{config.current().namespace}:awaiting"  # under the test namespace, so it is deleted after
    quick = tasks.add_later.enqueue(4, 5)
    waiting = await_cancel.enqueue(key)
    if config.redis_client(config.current().url).blpop([key], timeout=30) is None:
        raise AssertionError("the waiting async task never started")
    api.Job(waiting.id).cancel()
    _wait([quick, waiting])
    print(json.dumps({"quick": _result(quick), "cancelled": _result(waiting)}))


class Interrupt:
    """Client middleware that interrupts each push as its job is about to be written (KeyboardInterrupt, as a Ctrl-C
    or a kill would stop the process there), noting its jid."""

    def __init__(self) -> None:
        self.jids: list[str] = []

    def before_push(self, payload: dict[str, Any]) -> None:
        self.jids.append(payload["jid"])
        raise KeyboardInterrupt


def _found(result_id: str) -> str:
    """The status get_result reads, or "does not exist"."""
    try:
        return str(tasks.add.get_result(result_id).status.name)
    except framework_part("exceptions").TaskResultDoesNotExist:
        return "does not exist"


def interrupted_pushes() -> None:
    """Enqueue a task now and one due in an hour, each interrupted as its job is pushed, then one of each pushed;
    print their ids and what get_result finds of each."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    interrupt = Interrupt()
    middleware.client.add(interrupt)
    for task in (tasks.add, tasks.add.using(run_after=later)):
        try:
            task.enqueue(1, 2)
        except KeyboardInterrupt:
            pass
    middleware.client.remove(interrupt)
    pushed = [tasks.add.enqueue(3, 4).id, tasks.add.using(run_after=later).enqueue(5, 6).id]
    ids = interrupt.jids + pushed
    print(json.dumps({"interrupted": interrupt.jids, "pushed": pushed, "found": [_found(i) for i in ids]}))


def refused_pushes() -> None:
    """Enqueue a task now and one due in an hour on a Redis that refuses writes; print the errors raised."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    errors = []
    for task in (tasks.add, tasks.add.using(run_after=later)):
        try:
            task.enqueue(1, 2)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps(errors))


def enqueue_to_show(key: str) -> None:
    """Enqueue a task that holds its worker until `key` has an item, one that fails and a plain job; print their ids."""
    from orders import jobs

    held = hold.enqueue(key, note="shown")
    failed = tasks.refuse.enqueue("out of stock")
    plain = jobs.count_orders.enqueue("shown")
    print(json.dumps({"held": held.id, "failed": failed.id, "plain": plain}))
