"""What the Django tasks backend keeps of a task beside its job: the framework in use, and the task's record.

The framework is Django's own `django.tasks` (Django 6 and later) or its backport `django_tasks` (Django 4.2-5.x);
both have the same classes, under two names for one exception. The record (NS:djtask:<jid>, a hash) holds what a
result needs and the job's status does not: the task's path and options, its arguments, when it was enqueued,
and once it ran, the worker that ran it and its errors as Django describes them (class path and traceback). The
push writes it with the job, in one script call (client.push_beside): a record exists if and only if its job was
pushed. The worker adds to it as the task starts and ends; it lives as long as the job's status (NS:result:<jid>).
"""

import datetime as dt
import importlib
import json
import os
import socket
import traceback
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, cast

from ... import config
from ...client import Beside


@cache
def framework() -> ModuleType:
    """`django.tasks` on Django 6 and later, else the backport `django_tasks` (ImproperlyConfigured when absent)."""
    try:
        return importlib.import_module("django.tasks")
    except ImportError:
        pass
    try:
        return importlib.import_module("django_tasks")
    except ImportError:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "the jiggler_gevent tasks backend needs Django 6 (django.tasks) or, on Django 4.2-5.x, the backport: "
            "pip install 'jiggler_gevent[django]' (or django-tasks)"
        ) from None


def framework_part(name: str) -> ModuleType:
    """A submodule of the framework in use: "base", "exceptions", "signals", "backends.base"."""
    return importlib.import_module(f"{framework().__name__}.{name}")


def invalid_task_error() -> type[Exception]:
    """The exception the framework raises for a task its backend refuses (InvalidTask, or InvalidTaskError)."""
    exceptions = framework_part("exceptions")
    return cast("type[Exception]", getattr(exceptions, "InvalidTask", None) or exceptions.InvalidTaskError)


def worker_id() -> str:
    """This process, as a task result's worker_ids name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def error_of(exc: BaseException) -> dict[str, str]:
    """An exception as Django's TaskError has it: its class path and its full traceback."""
    kind = type(exc)
    return {
        "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


def when(timestamp: object) -> dt.datetime | None:
    """A stored unix time as an aware datetime (None when absent)."""
    return None if timestamp in (None, "") else dt.datetime.fromtimestamp(float(cast(str, timestamp)), tz=dt.UTC)


@dataclass
class TaskSpec:
    """A task as the payload carries it and the record keeps it: enough to run it and to describe its result."""

    path: str
    priority: int
    queue_name: str
    backend: str
    takes_context: bool
    run_after: float | None

    @classmethod
    def of(cls, task: Any) -> "TaskSpec":
        """The spec of a django Task (run_after as a unix time)."""
        run_after = None if task.run_after is None else task.run_after.timestamp()
        return cls(task.module_path, task.priority, task.queue_name, task.backend, task.takes_context, run_after)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dict(self.__dict__)

    def task(self) -> Any:
        """The django Task this spec describes, with its options as enqueued."""
        from django.utils.module_loading import import_string

        found = import_string(self.path)
        task_class = framework_part("base").Task
        if not isinstance(found, task_class):
            raise TypeError(f"{self.path} is not a task (made with @task), but {type(found).__name__}")
        return found.using(
            priority=self.priority,
            queue_name=self.queue_name,
            backend=self.backend,
            run_after=when(self.run_after),
        )


def _redis() -> Any:
    cfg = config.current()
    return config.redis_client(cfg.url), cfg.keys


def record(jid: str, spec: TaskSpec, args: list[Any], kwargs: dict[str, Any], enqueued_at: float) -> Beside:
    """A task's record, for its push to write with its job (client.push_beside); kept while the task may wait
    (RESULT_PENDING_TTL after its run_after)."""
    wait = max(0.0, (spec.run_after or enqueued_at) - enqueued_at)
    fields = {
        "task": json.dumps(spec.as_dict()),
        "args": json.dumps(args),
        "kwargs": json.dumps(kwargs),
        "enqueued_at": repr(enqueued_at),
    }
    return Beside(config.current().keys.django_task(jid), int(wait) + config.RESULT_PENDING_TTL, fields)


def start(jid: str) -> list[str]:
    """Add this worker to the workers that ran the task, as it starts; all of them, this one last. One worker at a
    time runs a job (another runs it again only once the first is dead), so reading then writing is safe."""
    client, keys = _redis()
    workers = json.loads(cast("str | None", client.hget(keys.django_task(jid), "worker_ids")) or "[]")
    workers.append(worker_id())
    client.hset(keys.django_task(jid), "worker_ids", json.dumps(workers))
    return cast("list[str]", workers)


def finish(jid: str, errors: list[dict[str, str]], keep: float) -> None:
    """Record, as a task ends, its errors (none: it succeeded); the record is kept `keep` seconds (its result_ttl)."""
    client, keys = _redis()
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.django_task(jid), "errors", json.dumps(errors))
    pipe.expire(keys.django_task(jid), int(keep) + 1)
    pipe.execute()


def read(jid: str) -> dict[str, Any] | None:
    """The record of a task (its JSON fields decoded), or None."""
    client, keys = _redis()
    raw = cast("dict[str, str]", client.hgetall(keys.django_task(jid)))
    if "task" not in raw:
        return None
    record: dict[str, Any] = {name: json.loads(raw[name]) for name in ("task", "args", "kwargs")}
    record["enqueued_at"] = float(raw["enqueued_at"])
    record["worker_ids"] = json.loads(raw.get("worker_ids", "[]"))
    record["errors"] = json.loads(raw.get("errors", "[]"))
    return record


def normalize_json(value: Any) -> Any:
    """The framework's own normalisation of arguments and return values (tuples to lists; TypeError otherwise)."""
    return _normalizer()(value)


@cache
def _normalizer() -> Any:
    """Django 6's normalize_json, else the backport's: looked up once (a failed import is not cached by Python, and
    costs more than the normalisation itself)."""
    try:
        from django.utils.json import normalize_json  # Django 6
    except ImportError:
        return framework_part("utils").normalize_json
    return normalize_json


def make_result(
    task: Any,
    result_id: str,
    status: str,
    record: dict[str, Any],
    times: dict[str, float],
    return_value: Any = None,
) -> Any:
    """A framework TaskResult: `status` a TaskResultStatus name, `times` unix times (started_at, finished_at)."""
    base = framework_part("base")
    result = base.TaskResult(
        task=task,
        id=result_id,
        status=base.TaskResultStatus[status],
        enqueued_at=when(record["enqueued_at"]),
        started_at=when(times.get("started_at")),
        finished_at=when(times.get("finished_at")),
        last_attempted_at=when(times.get("started_at")),
        args=record["args"],
        kwargs=record["kwargs"],
        backend=task.backend,
        errors=[base.TaskError(**error) for error in record["errors"]],
        worker_ids=list(record["worker_ids"]),
    )
    object.__setattr__(result, "_return_value", return_value)  # as Django's own backends set it
    return result
