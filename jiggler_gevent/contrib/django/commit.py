"""`JIGGLER["ENQUEUE_ON_COMMIT"] = True`: a push made inside a transaction of the default database is written when
the transaction commits, and never if it rolls back.

The enqueue call returns its jid at once. A push outside any transaction (autocommit) is written at once, as
without the setting. Guarantee: a job whose transaction rolled back is never pushed; one whose transaction
committed is pushed after the commit, by the process that committed (a process killed between the commit and the
push loses the push, as with `transaction.on_commit` written by hand). A push that fails then raises from the
commit, as Django's on_commit callbacks do; a unique job whose lock is held by then is skipped.
"""

from collections.abc import Callable

from django.db import transaction


def defer_to_commit(write: Callable[[], object]) -> bool:
    """client.defer: run `write` on the commit of the open transaction; False (write now) outside one."""
    if not transaction.get_connection().in_atomic_block:
        return False
    transaction.on_commit(write)
    return True


def enqueue_on_commit(enabled: bool) -> None:
    """Make pushes wait for the commit of their transaction (or stop doing so)."""
    from ... import client  # loaded only when enqueueing is configured, not by importing the Django app

    client.defer = defer_to_commit if enabled else None
