"""Pushing payloads to Redis: the client side of every enqueue verb.

Each push runs the client middleware chain, then writes with one atomic command: the push script (push.lua) for jobs to
run now, which also wakes a worker idle on several queues, or one ZADD for scheduled jobs. So a push, a bulk push
included, lands whole or not at all, in one round trip. Payloads that need more (a unique lock, a tracked status for
`result_ttl`, a batch) go through push_each.lua instead, which takes each unique lock in the same atomic step as its
push and skips those whose lock is held (their places in the result are None), writes tracked statuses and hashes pushed
beside a payload (`push_beside`), and counts a batch's jobs. Inside a `with Batch(...)` block pushes are collected
(`collecting`) and written by the block's end, all in one such call. A Redis that cannot be reached or refuses the write
(out of memory under `noeviction`, a read-only replica) raises EnqueueError naming the job and carrying Redis' reason;
nothing was pushed then.
"""

import os
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis

from . import config, middleware, scripts, wire
from . import payload as payload_mod
from .cluster import is_cluster
from .connect import block_for
from .errors import EnqueueError

# Set by jiggler_gevent.testing to divert pushes (inline or fake mode); None means push to Redis.
push_hook: Callable[[list[dict[str, Any]], float | None], None] | None = None
# Set by the Django integration (JIGGLER["ENQUEUE_ON_COMMIT"]): defer(write) either arranges for `write` to run
# later, when the open transaction commits (never if it rolls back), and returns True, or returns False: write now.
# The jids are returned at once either way.
defer: Callable[[Callable[[], object]], bool] | None = None

Item = tuple[dict[str, Any], float | None]  # a payload and when it is due (None: now)
Redis = redis.Redis  # for annotations inside Client, whose `redis` property hides the module


@dataclass
class BatchPush:
    """What the end of a `with Batch(...)` block writes: its jobs, and the batch they join."""

    bid: str
    mode: str  # "new": create the batch with `fields`; "add": add jobs to an existing one
    fields: list[str] = field(default_factory=list)  # alternating hash field names and values
    items: list[Item] = field(default_factory=list)


@dataclass
class Beside:
    """A hash written with a payload, in the same script call as its push: it exists if and only if the payload
    was pushed. `key` must hash to the namespace's slot on a Cluster (a key of config.Keys does)."""

    key: str
    ttl: int  # seconds
    fields: dict[str, str]

    def encode(self) -> str:
        """push_each.lua's form: a JSON array of the key, the TTL, then alternating field names and values."""
        return payload_mod.encode([self.key, str(self.ttl), *(x for pair in self.fields.items() for x in pair)])


# The batch whose block is open in this greenlet or thread: pushes made inside it are collected, not sent.
collecting: ContextVar[BatchPush | None] = ContextVar("jiggler_gevent_batch", default=None)


DEBOUNCE_KEEP = 24 * 3600  # seconds a debounce key outlives its job's due time (should no worker take it by then)


def durability(cfg: config.Config) -> tuple[int, float]:
    """`configure(wait_replicas=N, wait_timeout=S)`: how many replicas must acknowledge each push, within how
    many seconds (default 0: no wait, Redis' asynchronous replication; 1.0 s)."""
    replicas = int(cfg.extra.get("wait_replicas") or 0)
    return replicas, float(cfg.extra.get("wait_timeout") or config.DEFAULT_WAIT_TIMEOUT)


def _queue_waits(pipe: Any, replicas: int, timeout: float) -> None:
    """Queue WAITs for `replicas` after the write in `pipe`: `timeout` seconds in all, in blocks of at most
    MAX_BLOCK (connect.py), so each reply comes within the socket timeout. They share the write's connection,
    so each waits for that write; once enough replicas have it, the rest answer at once."""
    left = timeout
    while True:
        block = block_for(left)
        pipe.wait(replicas, int(block * 1000))
        left -= block
        if left <= 0:
            return


_KEPT = "_jiggler_gevent_push_connection"


def _kept(client: "redis.Redis") -> "redis.Redis | None":
    """A client on one connection of `client`'s pool, kept for pushes, now locked for this caller; None while another
    thread or greenlet is pushing on it (the caller uses the pool then), and for a Cluster client (no one pool).

    Skips the pool's checkout and release per push. Guarantees: one command at a time on the kept connection (its
    RLock, taken without waiting, so pushes never wait on each other); a process made by fork() keeps its own, never
    its parent's socket; checked as the pool checks a connection it hands out (closed by the server meanwhile, or with
    unread data: reconnected). One that fails or is interrupted mid-command is closed by redis-py, as a pool's is.
    """
    kept: tuple[int, redis.Redis] | None = client.__dict__.get(_KEPT)
    if kept is None or kept[0] != os.getpid():
        if is_cluster(client):
            return None
        kept = (os.getpid(), redis.Redis(connection_pool=client.connection_pool, single_connection_client=True))
        client.__dict__[_KEPT] = kept
    own = kept[1]
    if not own.single_connection_lock.acquire(blocking=False):
        return None
    try:
        # As the pool does at each checkout: reconnect if the server closed it meanwhile (no retry would after).
        if own.connection is not None:  # always, for a single-connection client
            client.connection_pool.ensure_connection(own.connection)
    except BaseException:
        own.single_connection_lock.release()
        raise
    return own


def _needs_each(payload: dict[str, Any]) -> bool:
    """True when a payload needs push_each.lua: a unique lock, a tracked status or a batch (payload.py's accessors,
    which the server's payload.View reads too), or a priority or a group (push_each.lua routes it, lib_ready.lua)."""
    if "priority" in payload or "group" in payload:
        return True
    if "unique_key" not in payload and "result_ttl" not in payload and "bid" not in payload:
        return False  # a plain payload, most of them: no accessor has anything to read
    p = payload_mod
    return p.unique_lock(payload) is not None or p.result_ttl(payload) is not None or p.batch_id(payload) is not None


class Client:
    """Pushes jobs for one configuration (default: the configured one at creation) to the Redis its URL named then."""

    def __init__(self, cfg: config.Config | None = None) -> None:
        self.cfg = cfg or config.current()
        self.url = self.cfg.url
        self.keys = self.cfg.keys
        self.wire = wire.of(self.keys)  # the payload format: jiggler's, or Sidekiq's with wire="sidekiq"
        self.replicas, self.wait_timeout = durability(self.cfg)

    @property
    def redis(self) -> redis.Redis:
        """The process's shared client of this configuration's Redis (config.redis_client)."""
        return config.redis_client(self.url)

    def push(self, payload: dict[str, Any]) -> str | None:
        """Push one payload to its queue now; returns its jid, or None for a unique job whose lock is held."""
        return self.push_bulk([payload])[0]

    def schedule(self, payload: dict[str, Any], at: float) -> str | None:
        """Put one payload in the scheduled set, due at unix time `at`; returns its jid (None as push())."""
        return self._write([payload], at)[0]

    def debounce(self, payload: dict[str, Any], at: float, key: str) -> str:
        """Push a debounced job due at unix time `at`, or, while a job of debounce key `key` still waits, replace it
        (its arguments, its due time) and keep its jid: one atomic script call (debounce.lua). Returns the jid.

        Written as every push is (middleware, testing's hooks, ENQUEUE_ON_COMMIT). A push deferred to a commit returns
        the payload's own jid at once; should a job of `key` still wait at the commit, that job keeps its jid."""
        if collecting.get() is not None:
            raise RuntimeError("a debounced job cannot be enqueued inside a `with Batch(...)` block")
        return str(self._write([payload], at, send=lambda: [self._send_debounce(payload, at, key)])[0])

    def _send_debounce(self, payload: dict[str, Any], at: float, key: str) -> bool:
        """Run debounce.lua; the payload's jid becomes that of the job that waits now (its own, or the one kept)."""
        before, after = self._split_at_jid(payload)
        k = self.keys
        keys = [k.debounce(key), k.schedule, k.queue(payload["queue"])]
        args = [before, after, payload["jid"], at, int((at - time.time() + DEBOUNCE_KEEP) * 1000)]

        def issue(client: Redis, target: Any) -> Any:
            return scripts.register(client).debounce(keys=keys, args=args, client=target)

        payload["jid"] = str(self._durably(issue, lambda: self._what([payload], None)))
        return True

    def push_beside(self, payload: dict[str, Any], at: float | None, beside: Beside) -> str | None:
        """Push one payload now (`at` None) or due at unix time `at`, and write the hash `beside` in the same atomic
        script call (push_each.lua): both or neither. Written as every push is (middleware, ENQUEUE_ON_COMMIT; under
        jiggler_gevent.testing's hooks the hash is not written). Returns the jid (None as push())."""
        if collecting.get() is not None:
            raise RuntimeError(f"{payload['name']} cannot be enqueued inside a `with Batch(...)` block")

        def issue(client: Redis, target: Any) -> Any:
            return self._send_each(client, target, [(payload, at)], None, beside)

        def send() -> list[bool]:
            return [bool(f) for f in self._durably(issue, lambda: self._what([payload], None))]

        return self._write([payload], at, send=send)[0]

    def _refuse_priority(self, payloads: list[dict[str, Any]]) -> None:
        """ValueError for a priority or a group on Sidekiq's wire: Sidekiq reads only the queue's list, where such a
        job would not be (it waits beside it, lib_ready.lua), so Ruby workers would never run it."""
        if self.keys.wire != "sidekiq":
            return
        for p in payloads:
            if "priority" in p or "group" in p:
                raise ValueError(
                    f"cannot enqueue {p['name']} with a priority or a group on Sidekiq's wire: Sidekiq reads only "
                    "the queue's list, and such a job waits beside it; use a separate queue instead"
                )

    def _split_at_jid(self, payload: dict[str, Any]) -> tuple[str, str]:
        """The payload's text before and after its jid (a fresh jid until it occurs once in the text)."""
        while True:
            text = self.wire.encode(payload)
            if text.count(payload["jid"]) == 1:
                before, _, after = text.partition(payload["jid"])
                return before, after
            payload["jid"] = payload_mod.new_jid()

    def push_bulk(self, payloads: list[dict[str, Any]]) -> list[str | None]:
        """Push many payloads to their queues, all or nothing, in one script call (None: unique duplicates)."""
        return self._write(payloads, None)

    def push_batch(self, batch: BatchPush) -> list[str | None]:
        """Write a batch's collected jobs and its totals, all or nothing, in one script call."""
        for p, _ in batch.items:
            p["bid"] = batch.bid
        return self._write([p for p, _ in batch.items], None, batch)

    def _write(
        self,
        payloads: list[dict[str, Any]],
        at: float | None,
        batch: BatchPush | None = None,
        send: Callable[[], list[bool]] | None = None,
    ) -> list[str | None]:
        """Push now, or collect into the open `Batch` block, or defer to the open transaction's commit (`defer`).
        `send` writes the payloads (default: `_send`) and says which were pushed."""
        self._refuse_priority(payloads)
        if batch is None:
            open_batch = collecting.get()
            if open_batch is not None:
                open_batch.items.extend((p, at) for p in payloads)
                return [p["jid"] for p in payloads]
        write = send or (lambda: self._send(payloads, at, batch))
        if defer is not None and defer(lambda: self._write_now(payloads, at, write)):
            return [p["jid"] for p in payloads]
        return self._write_now(payloads, at, write)

    def _write_now(
        self, payloads: list[dict[str, Any]], at: float | None, send: Callable[[], list[bool]]
    ) -> list[str | None]:
        chain = middleware.client
        if chain.entries:
            for p in payloads:
                chain.before("before_push", p)
        if push_hook is not None:
            push_hook(payloads, at)
            pushed = [True] * len(payloads)
        else:
            pushed = send()
        if chain.entries:
            for p, ok in zip(payloads, pushed, strict=True):
                if ok:
                    chain.after("after_push", p)
        return [p["jid"] if ok else None for p, ok in zip(payloads, pushed, strict=True)]

    def _send(self, payloads: list[dict[str, Any]], at: float | None, batch: BatchPush | None) -> list[bool]:
        """Write the payloads; which of them were pushed (all but unique duplicates)."""
        if not payloads and batch is None:
            return []
        each = batch is not None or any(map(_needs_each, payloads))
        reply = self._durably(
            lambda client, target: self._issue(client, target, payloads, at, batch, each),
            lambda: self._what(payloads, batch),
        )
        if each:
            return [bool(f) for f in reply]
        return [True] * len(payloads)

    def push_workflow(self, wid: str, fields: list[str], batch_fields: list[str], first: list[int]) -> int:
        """Write a workflow (its hash `fields` and its batch's) and push its `first` steps, all or nothing, in one
        script call (workflow_push.lua); how many steps were pushed. EnqueueError as any push."""
        if push_hook is not None:
            raise RuntimeError("workflows are not run by jiggler_gevent.testing's inline() or fake(): use a worker")
        if collecting.get() is not None:
            raise RuntimeError("a workflow cannot be enqueued inside a `with Batch(...)` block: its steps form a batch")
        now, k = time.time(), self.keys
        keys = [k.queues, k.wake, k.workflows, k.workflow(wid), k.batch(wid)]
        args: list[str | int | float] = [k.queue_prefix, now, config.BATCH_TTL, wid, payload_mod.encode(fields)]
        args += [payload_mod.encode(batch_fields), now - config.BATCH_TTL, k.result_prefix, *first]

        def issue(client: Redis, target: Any) -> Any:
            return scripts.register(client).workflow_push(keys=keys, args=args, client=target)

        return int(self._durably(issue, lambda: f"workflow {wid} ({len(first)} first step(s))"))

    def _durably(self, issue: Callable[[Redis, Any], Any], what: Callable[[], str]) -> Any:
        """Send one write with `issue(client, target)` and return its reply; EnqueueError naming `what` when Redis
        refuses it or cannot be reached (nothing was written then); `what()` names it.

        With `configure(wait_replicas=N)` the write is followed by WAIT on the same connection, and a push that
        fewer than N replicas acknowledged within `wait_timeout` seconds raises EnqueueError.
        """
        replicas, timeout = self.replicas, self.wait_timeout
        client = self.redis
        kept = None
        try:
            kept = None if replicas else _kept(client)
            target: Any = client.pipeline(transaction=False) if replicas else kept or client
            reply = issue(client, target)
            if replicas:
                _queue_waits(target, replicas, timeout)
                reply, *acks = target.execute()
                acked = acks[-1]
        except redis.RedisError as exc:
            # The class names what redis-py strips from Redis' reply (OOM, READONLY, NOREPLICAS...).
            reason = f"{type(exc).__name__}: {exc}"
            raise EnqueueError(f"could not push {what()} to Redis at {self._where}: {reason}") from exc
        finally:
            if kept is not None:
                kept.single_connection_lock.release()
        if replicas and acked < replicas:
            raise EnqueueError(
                f"pushed {what()} to the Redis master at {self._where}, but only {acked} of "
                f"{replicas} replica(s) acknowledged it within {timeout:g} s: a failover now could lose it"
            )
        return reply

    @property
    def _where(self) -> str:
        return config.redacted(self.url)

    @staticmethod
    def _what(payloads: list[dict[str, Any]], batch: BatchPush | None) -> str:
        what = payloads[0]["name"] if payloads else f"batch {batch.bid if batch else '?'}"
        return f"{len(payloads)} job(s) ({what})"

    def _issue(
        self,
        client: Redis,
        target: Any,
        payloads: list[dict[str, Any]],
        at: float | None,
        batch: BatchPush | None,
        each: bool,
    ) -> Any:
        """Send the write on `target` (`client`, or its pipeline that WAIT follows); its reply, or the pipeline.
        `each`: some payload needs push_each.lua (_needs_each), or it is a batch's."""
        if batch is not None:
            return self._send_each(client, target, batch.items, batch)
        if each:
            return self._send_each(client, target, [(p, at) for p in payloads], None)
        if at is not None:
            return target.zadd(self.keys.schedule, {self.wire.encode(p): at for p in payloads})
        keys = [self.keys.queues, self.keys.wake]
        return scripts.register(client).push(keys=keys, args=self._push_args(payloads), client=target)

    def _send_each(
        self, client: Redis, target: Any, items: Sequence[Item], batch: BatchPush | None, beside: Beside | None = None
    ) -> Any:
        """Push with push_each.lua: unique locks (SET NX PX) taken in the same step as their payloads' pushes,
        tracked statuses written, the batch's totals counted, `beside` written with each item pushed (one, from
        push_beside). A lock lasts `unique_for` seconds from when the job is due (now, or its `at`). Its reply holds
        one flag per item: pushed or not."""
        now, k = time.time(), self.keys
        args: list[str | int | float] = [k.queue_prefix, k.unique_prefix, k.result_prefix, k.batch_prefix, now]
        args += [config.RESULT_PENDING_TTL, config.BATCH_TTL]
        args += [batch.bid, batch.mode, payload_mod.encode(batch.fields)] if batch else ["", "", ""]
        for p, at in items:
            lock = payload_mod.unique_lock(p) or ""
            ttl_ms = int(((at or now) - now + float(p.get("unique_for") or 0)) * 1000) if lock else 0
            tracked = payload_mod.result_ttl(p)
            args += [p["queue"], self.wire.encode(p), "" if at is None else at, lock, p["jid"], max(1, ttl_ms)]
            args += ["" if tracked is None else tracked, beside.encode() if beside else ""]
        keys = [k.queues, k.wake, k.schedule, k.batches]
        return scripts.register(client).push_each(keys=keys, args=args, client=target)

    def _push_args(self, payloads: list[dict[str, Any]]) -> list[str | int]:
        """The push script's ARGV: the queue key prefix, then each queue's name, count and payloads."""
        if len(payloads) == 1:
            return [self.keys.queue_prefix, payloads[0]["queue"], 1, self.wire.encode(payloads[0])]
        by_queue: dict[str, list[str]] = {}
        for p in payloads:
            by_queue.setdefault(p["queue"], []).append(self.wire.encode(p))
        args: list[str | int] = [self.keys.queue_prefix]
        for queue, raws in by_queue.items():
            args += [queue, len(raws), *raws]
        return args


class Cached:
    """One Client per configuration, kept between pushes: made again when `configure()` (or `reset()`) has put new
    settings in force, or when the URL they resolve to has changed (an environment variable, with no explicit URL).

    Thread- and greenlet-safe without a lock: the entry is replaced whole, so a race at most makes one Client twice.
    """

    def __init__(self, derive: Callable[[config.Config], config.Config] | None = None) -> None:
        self.derive = derive  # the settings this Client uses, from those in force (sidekiq.push: Sidekiq's wire)
        self.entry: tuple[config.Config, str, Client] | None = None

    def get(self) -> Client:
        """The Client of the settings in force now."""
        cfg, entry = config.current(), self.entry
        if entry is not None and entry[0] is cfg and entry[1] == cfg.url:
            return entry[2]
        client = Client(self.derive(cfg) if self.derive else cfg)
        self.entry = (cfg, cfg.url, client)
        return client


current = Cached().get  # the Client of the settings in force: what the enqueue verbs push with
