"""The app's Django tasks (django.tasks on Django 6, the django_tasks backport before it), run by `manage.py
gjiggler` through the jiggler_gevent tasks backend (TASKS in settings.py)."""

import asyncio

try:
    from django.tasks import task
except ImportError:  # Django 4.2-5.x: the backport
    from django_tasks import task

from .models import Order, Report


class OrderError(Exception):
    """A task's own failure."""


@task()
def add(a: int, b: int) -> int:
    """A task with a return value."""
    return a + b


@task()
def refuse(reason: str) -> None:
    """A task that fails."""
    raise OrderError(reason)


@task(takes_context=True)
def whoami(context, label: str) -> dict:
    """A task that reads its context: its result's id and which attempt this is."""
    return {"id": context.task_result.id, "attempt": context.attempt, "label": label}


@task(queue_name="reports")
def count_orders(label: str) -> int:
    """A report written with the ORM, on the reports queue."""
    orders = Order.objects.count()
    Report.objects.create(label=label, orders=orders)
    return orders


@task()
async def add_later(a: int, b: int, wait: float = 0.05) -> int:
    """An async task: it runs on the worker's asyncio loop beside the blocking ones."""
    await asyncio.sleep(wait)
    return a + b
