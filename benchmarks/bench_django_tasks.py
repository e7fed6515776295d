"""What a Django task's enqueue costs next to a plain job's: `python -m benchmarks.bench_django_tasks [--jobs N]
[--rounds R]`.

On a private redis-server (never the one on 6379), in this process: N `enqueue()` calls of a plain `@job` noop, then
N `enqueue()` calls of a Django task (the tasks backend, contrib/django/tasks.py: its record and its job), then N of
the same task with a `run_after` an hour ahead (the scheduled push), each timed as µs per call; the cases run in turn,
`--rounds` times, and the medians are printed as one JSON line. Django is set up with settings.configure() and no
database (JIGGLER["ENQUEUE_ON_COMMIT"] off: no transaction to wait for).
"""

import argparse
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from jiggler_gevent import job

NAMESPACE = "bench"
QUEUE = "bench"


@job(queue=QUEUE, retries=0, name="benchmarks.bench_django_tasks.noop")
def noop() -> None:
    """Does nothing."""


def noop_task() -> None:
    """Does nothing: the Django task (made a task once Django is set up, in `cases`)."""


def setup_django(url: str) -> None:
    """Django settings for the tasks backend on `url`, no database."""
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["jiggler_gevent.contrib.django"],
        JIGGLER={"REDIS_URL": url, "NAMESPACE": NAMESPACE, "QUEUES": [QUEUE]},
        TASKS={"default": {"BACKEND": "jiggler_gevent.contrib.django.tasks.JigglerBackend", "QUEUES": [QUEUE]}},
    )
    django.setup()


def cases() -> dict[str, Callable[[], Any]]:
    """Each case's one enqueue call."""
    from jiggler_gevent.contrib.django.task_record import framework

    task = framework().task(queue_name=QUEUE)(noop_task)
    later = task.using(run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    return {"@job enqueue": noop.enqueue, "task enqueue": task.enqueue, "task enqueue, run_after": later.enqueue}


def per_call_us(call: Callable[[], Any], n: int) -> float:
    """µs per call over `n` calls."""
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import redis

    from jiggler_gevent.demo.local_redis import start_private

    url, stop = start_private()
    try:
        setup_django(url)
        calls = cases()
        for call in calls.values():  # warm: scripts loaded, connection open
            call()
        figures: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(args.rounds):
            for label, call in calls.items():
                figures[label].append(per_call_us(call, args.jobs))
                redis.Redis.from_url(url).flushdb()
        medians = {label: round(statistics.median(values), 1) for label, values in figures.items()}
        print(json.dumps({"jobs": args.jobs, "rounds": args.rounds, "us_per_call": medians}))
    finally:
        stop()


if __name__ == "__main__":
    main()
