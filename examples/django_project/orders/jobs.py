"""The app's jobs: plain Django ORM code. `manage.py gjiggler` imports this module in every worker."""

import os

from django.db import connection

from jiggler_gevent import job

from .models import Order, Report, Shipment


@job(retries=3)
def ship_order(order_id: int) -> None:
    """Write the order's shipment."""
    order = Order.objects.get(pk=order_id)
    Shipment.objects.create(order=order, worker_pid=os.getpid())


@job(queue="reports")
def count_orders(label: str, wait: float = 0.0) -> None:
    """A slow report: the query waits `wait` seconds inside PostgreSQL while other jobs go on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_order, pg_sleep(%s)", [wait])
        (orders,) = cursor.fetchone()
    Report.objects.create(label=label, orders=orders)
