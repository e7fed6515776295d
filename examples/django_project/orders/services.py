"""Placing an order: the row and its shipping job commit together or not at all."""

from django.db import transaction

from .jobs import ship_order
from .models import Order


def place_order(item: str, direct: bool = False) -> Order:
    """Create the order; its job is pushed only once the transaction has committed: by on_commit, or with
    `direct` by an enqueue inside the transaction, which JIGGLER["ENQUEUE_ON_COMMIT"] holds until the commit."""
    with transaction.atomic():
        order = Order.objects.create(item=item)
        if direct:
            ship_order.enqueue(order.pk)
        else:
            transaction.on_commit(lambda: ship_order.enqueue(order.pk))
    return order
