"""The job that runs a Django task in the worker (`manage.py gjiggler`): one per task enqueued through the backend.

The backend pushes it with the task's path (also in the payload's `wrapped`, so the dashboard, the log lines and the
per-job metrics name the task, not this job), options and arguments, `retries=0` (a task that raises is FAILED, as
Django defines it: no retry) and its `result_ttl`. It adds this worker to the task's record, calls the task (with a
TaskContext first when the task takes one), sends Django's task_started and task_finished signals, and returns the
task's return value, which the job's status keeps. An `async def` task runs on the worker's asyncio loop, as an
`async def` job does (server/async_jobs.py): a timeout or a cancel reaches it as `asyncio.CancelledError`. When the
task raises (or cannot be imported), its error as Django describes it (class path, traceback) is added to the record
before the exception goes on to the worker, which buries the job in the dead set and counts it failed. Delivery is
the worker's: at least once, so a task whose worker was SIGKILLed runs again, as its next attempt.
"""

import inspect
import time
from typing import Any

from ...errors import CancelJob, JobTimeout
from ...job import job
from ...payload import DJANGO_TASK
from ...server import async_jobs
from . import task_record
from .task_record import TaskSpec

RUN_NAME = DJANGO_TASK  # the payload module names it: the admin side shows its tasks without importing this
FAILURES = (Exception, JobTimeout, CancelJob)  # what a task's error records; not the worker's own exits


@job(name=RUN_NAME, retries=0)
def run_task(
    result_id: str, spec: dict[str, Any], args: list[Any], kwargs: dict[str, Any], meta: dict[str, Any]
) -> Any:
    """Run the Django task `spec` describes with `args` and `kwargs`; its return value, JSON-normalised. `meta`:
    when it was enqueued (`enqueued_at`) and how long its result is kept (`keep`)."""
    try:
        task = TaskSpec(**spec).task()
    except FAILURES as exc:
        task_record.finish(result_id, [task_record.error_of(exc)], meta["keep"])
        raise
    record = {"enqueued_at": meta["enqueued_at"], "args": args, "kwargs": kwargs, "errors": []}
    record["worker_ids"] = task_record.start(result_id)
    times = {"started_at": time.time()}
    signals = task_record.framework_part("signals")
    sender = type(task.get_backend())
    running = task_record.make_result(task, result_id, "RUNNING", record, times)
    signals.task_started.send(sender=sender, task_result=running)
    try:
        if task.takes_context:
            args = [task_record.framework().TaskContext(task_result=running), *args]
        value = task_record.normalize_json(_call(task, args, kwargs))
    except FAILURES as exc:
        record["errors"] = [task_record.error_of(exc)]
        _end(task, result_id, record, times, meta["keep"], "FAILED", None)
        raise
    _end(task, result_id, record, times, meta["keep"], "SUCCESSFUL", value)
    return value


def _call(task: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The task's return value: an async task awaited on the worker's loop (Django's own `call` would run it in a
    new loop of its own, which a timeout or a cancel could not reach)."""
    if inspect.iscoroutinefunction(task.func):
        return async_jobs.run(task.func(*args, **kwargs))
    return task.func(*args, **kwargs)


def _end(
    task: Any, result_id: str, record: dict[str, Any], times: dict[str, float], keep: float, status: str, value: Any
) -> None:
    """Record the task's errors and send task_finished."""
    task_record.finish(result_id, record["errors"], keep)
    times["finished_at"] = time.time()
    ended = task_record.make_result(task, result_id, status, record, times, value)
    task_record.framework_part("signals").task_finished.send(sender=type(task.get_backend()), task_result=ended)
