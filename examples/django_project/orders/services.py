"""Placing an order: the row and its shipping job commit together or not at all."""

from django.db import transaction

from .jobs import ship_order
from .models import Order


def place_order(item: str) -> Order:
    """Create the order; its job is pushed only once the transaction has committed."""
    with transaction.atomic():
        order = Order.objects.create(item=item)
        transaction.on_commit(lambda: ship_order.enqueue(order.pk))
    return order
