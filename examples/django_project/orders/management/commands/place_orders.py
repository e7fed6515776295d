"""`manage.py place_orders N [--rollback] [--direct] [--recount]`: place N orders in one transaction (rolled back on
request); `--direct` enqueues inside the transaction instead of through on_commit (see ENQUEUE_ON_COMMIT in
settings.py); `--recount` also asks, inside the transaction, for the orders to be counted once things are quiet for
60 s (a debounced job: one count however many transactions ask)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from orders.jobs import count_orders
from orders.services import place_order


class RolledBack(Exception):
    """Raised to roll the transaction back."""


class Command(BaseCommand):
    help = "Place N orders in one transaction; with --rollback, roll it back (no job is pushed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int)
        parser.add_argument("--item", default="book")
        parser.add_argument("--rollback", action="store_true")
        parser.add_argument("--direct", action="store_true", help="enqueue inside the transaction")
        parser.add_argument("--recount", action="store_true", help="a debounced count of the orders, 60 s later")

    def handle(
        self, *args: Any, count: int, item: str, rollback: bool, direct: bool, recount: bool, **options: Any
    ) -> None:
        try:
            with transaction.atomic():
                ids = [place_order(f"{item} {n}", direct).pk for n in range(count)]
                if recount:
                    jid = count_orders.set(debounce=60).enqueue("after placing")
                    self.stdout.write(f"recount {jid}")
                if rollback:
                    raise RolledBack
        except RolledBack:
            self.stdout.write(f"rolled back {count} order(s)")
            return
        self.stdout.write(f"placed {count} order(s): {ids[0] if ids else '-'}..{ids[-1] if ids else '-'}")
