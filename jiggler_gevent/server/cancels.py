"""Hearing of cancellations: every worker process keeps the jids cancelled lately and stops those it runs.

Guarantee (with cancel.lua): a jid cancelled in the last CANCEL_KEEP seconds is in `processor.cancelled`
within one message delivery of the cancel, or, after a lost connection, as soon as the subscription is back
(the listener re-reads NS:cancelled each time it subscribes, after subscribing, so nothing falls in between).
The Processor then never starts that job (a payload fetched later, or recovered from a dead worker), and a
running one is stopped at its next safe point. A job fetched in the instant between the cancel and the
message starts and is stopped the same way.
"""

import logging
import time
from typing import cast

import gevent
import gevent.event
import redis

from .. import config
from ..cluster import is_cluster
from ..gevent_types import Event, Greenlet
from ..keys import Keys
from .backoff import Backoff
from .processor import Processor

log = logging.getLogger("jiggler_gevent.cancels")


def own_connection(client: redis.Redis) -> redis.Redis:
    """A client like `client` with a pool of one connection of its own."""
    pool = client.connection_pool
    own = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs)
    return redis.Redis(connection_pool=own)


class CancelListener:
    """Subscribes to NS:cancel and hands each cancelled jid to the Processor."""

    def __init__(self, client: redis.Redis, keys: Keys, processor: Processor) -> None:
        self.redis, self.keys, self.processor = client, keys, processor
        # The subscription keeps a connection for itself: one of its own, outside the shared pool. A Redis
        # Cluster client's pub/sub opens one of its own on the node of the channel's slot already.
        self.listening = client if is_cluster(client) else own_connection(client)
        self.greenlet: Greenlet | None = None
        self.subscribed: Event = gevent.event.Event()

    def start(self) -> None:
        """Listen in a greenlet of its own until stop()."""
        self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop listening."""
        if self.greenlet is not None:
            self.greenlet.kill(block=True)
            self.greenlet = None

    def _run(self) -> None:
        backoff, outage = Backoff(), False
        while True:
            pubsub = self.listening.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.keys.cancel_channel)
                self._catch_up()
                self.subscribed.set()
                if outage:
                    log.info("listening for cancellations again")
                backoff.succeeded()
                outage = False
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.heard(message["data"])
            except redis.RedisError as exc:
                self.subscribed.clear()
                if not outage:
                    log.warning("lost the cancellation channel, reconnecting: %s", exc)
                outage = True
                gevent.sleep(backoff.failed())
            finally:
                pubsub.close()

    def _catch_up(self) -> None:
        """Learn every cancellation still kept, and forget those older than that."""
        oldest = time.time() - config.CANCEL_KEEP
        kept = cast(
            "list[tuple[str, float]]", self.redis.zrangebyscore(self.keys.cancelled, oldest, "+inf", withscores=True)
        )
        cancelled = self.processor.cancelled
        for jid in [j for j, at in cancelled.items() if at < oldest]:
            del cancelled[jid]
        for jid, at in kept:
            cancelled[jid] = at
            self.processor.cancel(jid)

    def heard(self, jid: str) -> None:
        """One cancellation: remember it, and stop the job if it runs here."""
        self.processor.cancelled[jid] = time.time()
        if self.processor.cancel(jid):
            log.info("cancelling running job jid=%s", jid)
