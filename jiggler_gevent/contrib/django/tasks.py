"""Django's task framework on jiggler_gevent: `TASKS = {"default": {"BACKEND":
"jiggler_gevent.contrib.django.tasks.JigglerBackend", "QUEUES": [...], "OPTIONS": {"RESULT_TTL": seconds}}}`.

Works with `django.tasks` (Django 6 and later) and with its backport `django_tasks` (Django 4.2-5.x). A task's enqueue
pushes one job (task_run.run_task) to the jiggler queue named like the task's `queue_name`, due at its `run_after`; the
job's jid is the result's id, and its `wrapped` the task's path (the dashboard, `gjiggler`, the log lines and the
per-job metrics name the task by it, as Sidekiq names an ActiveJob). `get_result` reads the job's status (api.Job) and
the task's record (task_record.py). With JIGGLER["ENQUEUE_ON_COMMIT"], an enqueue inside a transaction is written
(record and job) when the transaction commits, never if it rolls back. A task's priority is its job's (`priority`, the
same -100..100 range): of the waiting jobs of one queue, a higher priority starts first.

Guarantees: the task's record and its job are written by one atomic script call (push_each.lua), so there is no task
without its job nor job without its record: a push refused or cut short leaves neither, and get_result finds only tasks
that were pushed. Once pushed, the task runs at least once (the worker's delivery); with ENQUEUE_ON_COMMIT, a process
killed between the commit and the push loses the task, as with `transaction.on_commit` written by hand.
"""

import math
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ... import payload as payload_mod
from ...client import Beside
from . import task_record
from .task_record import TaskSpec
from .task_run import RUN_NAME

DEFAULT_RESULT_TTL = 24 * 3600
OPTIONS = {"RESULT_TTL"}
STATUSES = {  # a job's status (api.Job) -> the task result's
    "scheduled": "READY",
    "queued": "READY",
    "retrying": "READY",
    "unknown": "READY",  # its record exists, so it was pushed; its status is gone (both are kept as long)
    "running": "RUNNING",
    "done": "SUCCESSFUL",
    "dead": "FAILED",
    "cancelled": "FAILED",
    "expired": "FAILED",
}


def _check_params(params: dict[str, Any]) -> float:
    """The result TTL of a backend's settings; ImproperlyConfigured for what the backend cannot use."""
    options = params.get("OPTIONS", {})
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ImproperlyConfigured(f"TASKS OPTIONS: unknown key(s) {', '.join(map(repr, unknown))}; known: RESULT_TTL")
    ttl = options.get("RESULT_TTL", DEFAULT_RESULT_TTL)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl < math.inf:
        raise ImproperlyConfigured(f"TASKS OPTIONS['RESULT_TTL'] must be a positive number of seconds, not {ttl!r}")
    for queue in params.get("QUEUES", []):
        if not isinstance(queue, str) or not queue or ":" in queue:
            raise ImproperlyConfigured(f"TASKS QUEUES: a queue name is a non-empty string without ':', not {queue!r}")
    return float(ttl)


class JigglerBackend(task_record.framework_part("backends.base").BaseTaskBackend):  # type: ignore[misc]
    """Enqueues Django tasks as jiggler_gevent jobs, run by `manage.py gjiggler`; results through get_result."""

    supports_defer = True  # run_after
    supports_async_task = True  # an async def task runs on the worker's asyncio loop (task_run.py)
    supports_get_result = True
    supports_priority = True  # the job's own priority

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.result_ttl = _check_params(params)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Push the task as a job; its TaskResult, READY (a refused task or argument raises, nothing pushed)."""
        self.validate_task(task)
        if not task.queue_name or ":" in task.queue_name:
            raise task_record.invalid_task_error()(f"Queue {task.queue_name!r}: a queue name holds no ':'")
        spec = TaskSpec.of(task)
        args, kwargs = task_record.normalize_json(list(args)), task_record.normalize_json(dict(kwargs))
        enqueued_at = time.time()
        result_id = payload_mod.new_jid()
        meta = {"keep": self.result_ttl, "enqueued_at": enqueued_at}
        payload = payload_mod.build(
            RUN_NAME, [result_id, spec.as_dict(), args, kwargs, meta], queue=task.queue_name, retries=0
        )
        payload["jid"], payload["result_ttl"] = result_id, self.result_ttl
        payload["wrapped"] = spec.path  # shown in its wrapper's place (payload.display_name), as Sidekiq does
        if spec.priority:
            payload["priority"] = spec.priority
        record = {"enqueued_at": enqueued_at, "args": args, "kwargs": kwargs, "errors": [], "worker_ids": []}
        result = task_record.make_result(task, result_id, "READY", record, {})

        def write() -> None:
            _push(payload, spec.run_after, task_record.record(result_id, spec, args, kwargs, enqueued_at))
            task_record.framework_part("signals").task_enqueued.send(type(self), task_result=result)

        _write_on_commit(write)
        return result

    def get_result(self, result_id: str) -> Any:
        """The task's result now (TaskResultDoesNotExist: no such task, or its result_ttl has passed)."""
        from ... import api

        if not isinstance(result_id, str) or not result_id:
            raise task_record.framework_part("exceptions").TaskResultDoesNotExist(result_id)
        # the job's status first, then the record: a run writes its record (worker_ids at its start, errors before
        # it ends) before the status moves on, so the record read second is never older than the status
        info = api.Job(result_id).info()
        record = task_record.read(result_id)
        if record is None:
            raise task_record.framework_part("exceptions").TaskResultDoesNotExist(result_id)
        status = STATUSES[info["status"]]
        times = {name: info[name] for name in ("started_at",) if name in info}
        if status in ("SUCCESSFUL", "FAILED") and "updated_at" in info:
            times["finished_at"] = info["updated_at"]
        if status == "FAILED" and not record["errors"]:
            record["errors"] = [_jiggler_error(info)]
        task = TaskSpec(**record["task"]).task()
        return task_record.make_result(task, result_id, status, record, times, info.get("result"))


def _push(payload: dict[str, Any], due: float | None, record: Beside) -> None:
    """Push the job now, or schedule it for `due`, with the task's record: both or neither."""
    from ... import client

    client.current().push_beside(payload, due if due is not None and due > time.time() else None, record)


def _write_on_commit(write: Any) -> None:
    """Write now, or, with JIGGLER["ENQUEUE_ON_COMMIT"] inside a transaction, when it commits (never on rollback)."""
    from ... import client

    if client.defer is None or not client.defer(write):
        write()


def _jiggler_error(info: dict[str, Any]) -> dict[str, str]:
    """A failure the task never saw (cancelled, expired, its worker died), as a TaskError's fields."""
    import builtins

    from ... import errors

    name = str(info.get("error_class") or "JobFailed")
    path = "builtins.RuntimeError"  # a class that can be imported, when the job's own cannot be named
    for module in (errors, builtins):
        if isinstance(getattr(module, name, None), type):
            path = f"{module.__name__}.{name}"
    return {"exception_class_path": path, "traceback": f"{name}: {info.get('error_message', '')}"}
