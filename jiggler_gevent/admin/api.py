"""Reading and changing jiggler_gevent's state from Python: the admin API. A worker never imports it.

    Stats()          processed, failed, enqueued, scheduled_size, retry_size, dead_size, processes, busy
    Queue(name)      a queue: len, latency, iterate, clear; Queue.all() every known queue
    ScheduledSet()   RetrySet()   DeadSet()   sorted sets: len, iterate, page, find, clear, retry_all
    ProcessSet()     live worker processes
    PeriodicSet()    periodic entries the live processes published: next_at, last_at, enqueue_now() (cron.py)
    Limits()         the limiters used on the namespace: name, kind, size, per, in_use (limits.py)
    Job(jid)         one job: status, result(timeout), cancel(); JobFailed, JobCancelled, CancelRefused (jobs.py)
    BatchStatus(bid) one batch: total, pending, failures, complete, success, failed_jids; Batches() (jobs.py)
    Workflow(id)     one workflow: status, result(timeout), steps, cancel(); Workflows() (workflows.py)
    Metrics(minutes) per-job runs, failures, run time, p50/p95 over the last minutes, per minute (metrics.py)

Iterating yields Entry objects (jid, name, args, kwargs, queue, error_class, error_message, retry_count, ...) with
retry() and delete(). `display_name` and `display_args` (`display_kwargs`) name the job a wrapper runs (`wrapped`: a
Django task, an ActiveJob) and its own arguments; a plain job's are name and args. Large sets are read in windows, never
whole. Payloads are read and written through the wire of the configured key layout (wire.of), never parsed here: with
`wire="sidekiq"` an entry shows a Sidekiq job as the worker sees it.

The clients come from config.redis_client, which decodes replies: the `bytes | str` that redis-py's types
allow for a reply is always `str` here, hence the casts.
"""

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypedDict, cast

import redis

from .. import config, scripts, waiting, wire
from .. import payload as payload_mod
from ..connect import server_and_version
from ..errors import CancelRefused, JobCancelled, JobFailed
from ..keys import Keys
from .cron import PeriodicEntry, PeriodicSet
from .jobs import Batches, BatchStatus, Job
from .limits import Limit, Limits
from .metrics import JobSummary, Metrics
from .workflows import Workflow, Workflows

__all__ = [
    "Stats",
    "Queue",
    "ScheduledSet",
    "RetrySet",
    "DeadSet",
    "SortedSet",
    "ProcessSet",
    "Process",
    "PeriodicSet",
    "PeriodicEntry",
    "Entry",
    "stats_dict",
    "in_flight",
    "redis_info",
    "entry_at",
    "queue_entry_near",
    "release_unique_locks",
    "Limits",
    "Limit",
    "Job",
    "JobFailed",
    "JobCancelled",
    "CancelRefused",
    "BatchStatus",
    "Batches",
    "Metrics",
    "JobSummary",
    "Workflow",
    "Workflows",
]

WINDOW = 100


def _client_and_keys() -> "tuple[redis.Redis, Keys]":
    cfg = config.current()
    return config.redis_client(cfg.url), cfg.keys


def _object(text: str) -> dict[str, Any]:
    """A JSON object a worker wrote (its heartbeat's info); {} for anything else, so that one damaged
    record does not make every reader fail."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Entry:
    """One job as stored: in a queue (`score` None) or in a sorted set (`score` is its time)."""

    def __init__(self, raw: str, container: "Queue | SortedSet", score: float | None = None) -> None:
        self.raw, self.container, self.score = raw, container, score
        self.item: dict[str, Any] = container.wire.read(raw)  # the internal form, whatever the wire

    def _get(self, field: str, default: Any = None) -> Any:
        return self.item.get(field, default)

    jid = property(lambda self: self._get("jid"))
    name = property(lambda self: self._get("name"))
    args = property(lambda self: self._get("args", []))
    kwargs = property(lambda self: self._get("kwargs", {}))
    queue = property(lambda self: self._get("queue") or config.DEFAULT_QUEUE)
    error_class = property(lambda self: self._get("error_class"))
    error_message = property(lambda self: self._get("error_message"))
    error_backtrace = property(lambda self: self._get("error_backtrace"))
    retry_count = property(lambda self: self._get("retry_count", 0))
    priority = property(lambda self: self._get("priority", 0))
    enqueued_at = property(lambda self: self._get("enqueued_at"))
    failed_at = property(lambda self: self._get("failed_at"))

    @property
    def display_name(self) -> str:
        """The job to show: the one a wrapper runs (`wrapped`: a Django task's path, an ActiveJob's class), else
        `name`. `name` stays the wrapper's, which the worker looks up."""
        return payload_mod.display_name(self.item)

    @property
    def display_args(self) -> list[Any]:
        """The arguments of the job display_name names: a Django task's own args, else `args`."""
        return payload_mod.display_arguments(self.item)[0]

    @property
    def display_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the job display_name names: a Django task's own kwargs, else `kwargs`."""
        return payload_mod.display_arguments(self.item)[1]

    @property
    def at(self) -> float | None:
        """When it is due (scheduled, retry) or died (dead)."""
        return self.score

    def delete(self) -> bool:
        """Remove this job, releasing its unique lock if it holds one; True if it was still there."""
        removed = self.container.remove(self.raw)
        if removed:
            release_unique_locks([self.item])
        return removed

    def retry(self) -> bool:
        """Push this job to the back of its queue now; True if it was still there."""
        return self.container.requeue(self)

    def __repr__(self) -> str:
        return f"<Entry {self.name} jid={self.jid} queue={self.queue}>"


class _Paged:
    """Iteration and lookup for a container that reads itself in windows with `page(offset, limit)`."""

    def page(self, offset: int = 0, limit: int = 25) -> list[Entry]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Entry]:
        offset = 0
        while True:
            batch = self.page(offset, WINDOW)
            yield from batch
            if len(batch) < WINDOW:
                return
            offset += WINDOW

    def find(self, jid: str) -> Entry | None:
        """The entry with this jid, or None (a scan of the whole container: for tools, not hot paths)."""
        return next((e for e in self if e.jid == jid), None)


class Queue(_Paged):
    """One queue: its plain list, and beside it the sorted set of its jobs with a priority other than 0 and the lists
    of its groups (scripts/lib_ready.lua). Its jobs are read in the order they start: priorities above 0, then its
    groups and its list round-robin in the order of their turns (fetch.lua), then priorities below 0.
    """

    def __init__(self, name: str = config.DEFAULT_QUEUE) -> None:
        self.name = name
        self.redis, self.keys = _client_and_keys()
        self.key = self.keys.queue(name)
        self.prio_key = self.keys.prio(name)
        self.rotation = self.keys.groups(name)
        self.wire = wire.of(self.keys)

    @classmethod
    def all(cls) -> list["Queue"]:
        """Every queue ever pushed to, by name."""
        client, keys = _client_and_keys()
        return [cls(n) for n in sorted(cast("set[str]", client.smembers(keys.queues)))]

    def __len__(self) -> int:
        return sum(size for size, _ in self._parts())

    def groups(self) -> dict[str, int]:
        """The groups with jobs waiting in this queue, and how many each has, in the order of their turns."""
        return {name: size for name, size in self._turns() if name}

    def _turns(self) -> list[tuple[str, int]]:
        """The members of the rotation with jobs waiting, in the order of their turns, and how many each has; the
        list is the member '', at the back when it is not in yet (the next fetch puts it there). [] when no group
        waits: then the list is not taken in turns."""
        names = cast("list[str]", self.redis.zrange(self.rotation, 0, -1))
        if not names:
            return []
        if "" not in names:
            names.append("")
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.keys.group(self.name, name) if name else self.key)
            sizes = pipe.execute()
        return [(name, int(size)) for name, size in zip(names, sizes, strict=True) if size]

    def _parts(self) -> list[tuple[int, Callable[[int, int], list[str]]]]:
        """The places the queue's jobs wait, in the order page() reads them: for each, how many wait there and how to
        read a window of them (first position, how many), next to start first."""
        turns = self._turns()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcount(self.prio_key, "-inf", "(0")
            pipe.llen(self.key)
            pipe.zcount(self.prio_key, "(0", "+inf")
            above, plain, below = pipe.execute()

        def scored(first: int) -> Callable[[int, int], list[str]]:
            return lambda start, n: cast(
                "list[str]", self.redis.zrange(self.prio_key, first + start, first + start + n - 1)
            )

        if turns:
            middle = (sum(size for _, size in turns), self._read_in_turn(turns))
        else:
            middle = (int(plain), lambda start, n: self._oldest_first(self.key, start, start + n - 1))
        return [(int(above), scored(0)), middle, (int(below), scored(int(above)))]

    def _oldest_first(self, key: str, first: int, last: int) -> list[str]:
        """Positions `first` to `last` of the list `key`, counted from its oldest job (its right end)."""
        return cast("list[str]", self.redis.lrange(key, -(last + 1), -(first + 1)))[::-1]

    def _read_in_turn(self, turns: list[tuple[str, int]]) -> Callable[[int, int], list[str]]:
        """How to read a window of the jobs of the rotation `turns` in the order the fetch takes them: one LRANGE
        per member the window reaches, in one round trip."""

        def read(start: int, n: int) -> list[str]:
            slots = _round_robin([size for _, size in turns], start, n)
            spans: dict[int, tuple[int, int]] = {}
            for member, index in slots:
                first, last = spans.get(member, (index, index))
                spans[member] = (min(first, index), max(last, index))
            with self.redis.pipeline(transaction=False) as pipe:
                for member, (first, last) in spans.items():
                    name = turns[member][0]
                    pipe.lrange(self.keys.group(self.name, name) if name else self.key, -(last + 1), -(first + 1))
                replies = dict(zip(spans, pipe.execute(), strict=True))
            found = {(m, spans[m][0] + i): raw for m, reply in replies.items() for i, raw in enumerate(reply[::-1])}
            return [found[slot] for slot in slots if slot in found]  # a job taken meanwhile is left out

        return read

    @property
    def size(self) -> int:
        return len(self)

    @property
    def latency(self) -> float:
        """Seconds the oldest job has waited (0 when empty), whether on the list, in a group or with a priority
        (waiting.candidates: the first job of each priority is read)."""
        return max((self._waited(raw) for raw in waiting.candidates(self.redis, self.keys, self.name)), default=0.0)

    def _waited(self, raw: str) -> float:
        entry = Entry(raw, self)  # times in seconds, also from Sidekiq 8 (which writes milliseconds)
        times = (entry._get("enqueued_at"), entry._get("at"), 0.0)
        ready = max(x for x in times if isinstance(x, (int, float)))
        return max(0.0, time.time() - ready) if ready else 0.0

    @property
    def paused(self) -> bool:
        """Whether the queue is paused: no worker starts a job from it until it is resumed."""
        return bool(self.redis.sismember(self.keys.paused, self.key))

    def pause(self) -> None:
        """Pause the queue: from now on no worker starts a job from it (the fetch script checks, for every worker
        at once); jobs already running finish, and enqueueing still works."""
        self.redis.sadd(self.keys.paused, self.key)

    def resume(self) -> None:
        """Resume the queue, and wake an idle worker so its jobs start at once."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.paused, self.key)
            pipe.zadd(self.keys.wake, {"wake": 0})
            pipe.execute()

    def page(self, offset: int = 0, limit: int = 25) -> list[Entry]:
        """Jobs from the next to run on: higher priorities first, then the groups and the list in turn (each oldest
        first), as the fetch takes them."""
        raws: list[str] = []
        for size, read in self._parts():
            if len(raws) >= limit:
                break
            if offset < size:
                raws += read(offset, min(size - offset, limit - len(raws)))
            offset = max(0, offset - size)
        return [Entry(r, self) for r in raws[:limit]]

    def remove(self, raw: str) -> bool:
        if '"priority"' in raw and self.redis.zrem(self.prio_key, raw):
            return True
        group = self.wire.read(raw).get("group") if '"group"' in raw else None
        if isinstance(group, str) and self.redis.lrem(self.keys.group(self.name, group), 1, raw):
            return True
        return bool(self.redis.lrem(self.key, 1, raw))

    def requeue(self, entry: Entry) -> bool:
        """A queued job is already waiting to run."""
        return False

    def clear(self) -> int:
        """Delete every job in the queue, releasing the unique locks they hold; returns how many."""
        group_keys = [self.keys.group(self.name, g) for g in self.groups()]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.key, 0, -1)
            pipe.zrange(self.prio_key, 0, -1)
            for key in group_keys:
                pipe.lrange(key, 0, -1)
            pipe.delete(self.key, self.prio_key, self.rotation, *group_keys)
            pipe.srem(self.keys.queues, self.name)
            raws, prioritized, *grouped, _, _ = pipe.execute()
        raws += prioritized
        for more in grouped:
            raws += more
        release_unique_locks(Entry(raw, self).item for raw in raws)
        return len(raws)


def _round_robin(sizes: list[int], start: int, n: int) -> list[tuple[int, int]]:
    """Positions `start` to `start + n - 1` of a round-robin over members of these sizes, in their order, each member
    leaving the rotation once it has no more: (the member, which of its jobs), its jobs counted from its first.
    Rounds where the same members remain are skipped whole, so a deep position costs one step per distinct size."""
    out: list[tuple[int, int]] = []
    position, done_rounds = 0, 0
    ending = Counter(s for s in sizes if s > 0)  # how many members leave after each round count
    remaining = sum(ending.values())
    for level in sorted(ending):
        block = (level - done_rounds) * remaining  # rounds done_rounds..level-1, `remaining` members in each
        if start + len(out) < position + block:
            active = [i for i, s in enumerate(sizes) if s >= level]
            while len(out) < n and start + len(out) < position + block:
                into = start + len(out) - position
                out.append((active[into % remaining], done_rounds + into // remaining))
        if len(out) >= n:
            break
        position += block
        remaining -= ending[level]
        done_rounds = level
    return out


class SortedSet(_Paged):
    """Shared behaviour of the scheduled, retry and dead sets."""

    key_name = ""

    def __init__(self) -> None:
        self.redis, self.keys = _client_and_keys()
        self.key = getattr(self.keys, self.key_name)
        self.scripts = scripts.register(self.redis)
        self.wire = wire.of(self.keys)

    def __len__(self) -> int:
        return int(self.redis.zcard(self.key))

    @property
    def size(self) -> int:
        return len(self)

    def page(self, offset: int = 0, limit: int = 25, newest_first: bool = False) -> list[Entry]:
        """A window of entries, by time (oldest first unless newest_first)."""
        if limit <= 0:
            return []
        read = self.redis.zrevrange if newest_first else self.redis.zrange
        rows = cast("list[tuple[str, float]]", read(self.key, offset, offset + limit - 1, withscores=True))
        return [Entry(raw, self, score) for raw, score in rows]

    def remove(self, raw: str) -> bool:
        return bool(self.redis.zrem(self.key, raw))

    def requeue(self, entry: Entry) -> bool:
        item = dict(entry.item)
        to_push = item.get("raw") if isinstance(item.get("raw"), str) else None
        if to_push is None:
            item["enqueued_at"] = time.time()
            to_push = self.wire.encode(item)
        queue = entry.queue
        moved = self.scripts.move_one(
            keys=[self.key, self.keys.queues, self.keys.queue(queue), self.keys.wake], args=[entry.raw, to_push, queue]
        )
        return bool(moved)

    def retry_all(self) -> int:
        """Push every entry to its queue now; returns how many."""
        n = 0
        while True:
            batch = self.page(0, WINDOW)
            if not batch:
                return n
            n += sum(1 for e in batch if e.retry())

    def clear(self) -> int:
        """Delete every entry, releasing the unique locks they hold; returns how many."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(self.key, 0, -1)
            pipe.delete(self.key)
            raws, _ = pipe.execute()
        release_unique_locks(Entry(raw, self).item for raw in raws)
        return len(raws)


class ScheduledSet(SortedSet):
    """Jobs waiting for their enqueue_in / enqueue_at time."""

    key_name = "schedule"


class RetrySet(SortedSet):
    """Failed jobs waiting for their next attempt."""

    key_name = "retry"


class DeadSet(SortedSet):
    """Jobs out of retries, and payloads that could not be run."""

    key_name = "dead"


def release_unique_locks(items: Iterable[dict[str, Any]]) -> int:
    """Release the unique locks the given payloads hold (each only if it still holds that payload's jid)."""
    client, keys = _client_and_keys()
    locks = [(keys.unique(d), item.get("jid")) for item in items if (d := payload_mod.unique_lock(item))]
    released = 0
    release = scripts.register(client).unique_release
    for start in range(0, len(locks), 1000):
        chunk = locks[start : start + 1000]
        released += int(release(keys=[k for k, _ in chunk], args=[str(j) for _, j in chunk], client=client))
    return released


class Process:
    """One live worker process, from its heartbeat."""

    def __init__(self, identity: str, info: dict[str, Any], work: dict[str, Any]) -> None:
        self.identity, self.info, self.work = identity, info, work

    def __getattr__(self, name: str) -> Any:
        try:
            return self.info[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """The jobs running in it at its last heartbeat: each its `queue`, `payload` (the internal form), `run_at`,
        what it reported (progress...), and `display_name` and `display_args` (`display_kwargs`), as Entry has them."""
        return list(self.work.values())


class ProcessSet:
    """Worker processes whose heartbeat has not expired."""

    def __init__(self) -> None:
        self.redis, self.keys = _client_and_keys()
        self.wire = wire.of(self.keys)

    def _load(self) -> list[Process]:
        identities = sorted(cast("set[str]", self.redis.smembers(self.keys.processes)))
        with self.redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hmget(self.keys.process(identity), HEARTBEAT_FIELDS)
                pipe.hgetall(self.keys.work(identity))
            replies = pipe.execute()
        processes = []
        for i, identity in enumerate(identities):
            fields, work = replies[2 * i], replies[2 * i + 1]
            if fields[0]:
                running = {k: _displayed(self.wire.read_work(v)) for k, v in work.items()}
                processes.append(Process(identity, _heartbeat(fields), running))
        return processes

    def __iter__(self) -> Iterator[Process]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _displayed(work: dict[str, Any]) -> dict[str, Any]:
    """A running job's work entry with display_name, display_args and display_kwargs (Entry's) added."""
    payload = work.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    work["display_name"] = payload_mod.display_name(payload)
    work["display_args"], work["display_kwargs"] = payload_mod.display_arguments(payload)
    return work


HEARTBEAT_FIELDS = ("info", "busy", "quiet", "beat", "rss")


def _heartbeat(fields: list[str | None]) -> dict[str, Any]:
    """A process's info from its heartbeat hash: the JSON `info` field, with Sidekiq's separate fields (busy, quiet,
    beat, rss in KB), which a Ruby Sidekiq process keeps out of `info`, read over it when present."""
    info = _object(cast(str, fields[0]))
    busy, quiet, beat, rss = fields[1:]
    try:
        if busy is not None:
            info["busy"] = int(busy)
        if quiet is not None:
            info["quiet"] = quiet == "true"
        if beat is not None:
            info["beat"] = float(beat)
        if rss is not None:
            info["rss"] = int(rss) * 1024
    except ValueError:
        pass  # a field another writer filled oddly: what `info` says stands
    return info


class History(TypedDict, total=False):
    """What Stats.history returns: `dates` (ISO dates, UTC, oldest first) and, for each date in that order,
    the `processed` and `failed` counts (every key is set once history() returns)."""

    dates: list[str]
    processed: list[int]
    failed: list[int]


class Stats:
    """A snapshot of the counters and sizes, read when created."""

    def __init__(self) -> None:
        self.redis, self.keys = _client_and_keys()
        k = self.keys
        queue_names = sorted(cast("set[str]", self.redis.smembers(k.queues)))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.stat("processed"))
            pipe.get(k.stat("failed"))
            pipe.zcard(k.schedule)
            pipe.zcard(k.retry)
            pipe.zcard(k.dead)
            pipe.get(k.stat("expired"))
            for name in queue_names:
                pipe.llen(k.queue(name))
                pipe.zcard(k.prio(name))
                pipe.zrange(k.groups(name), 0, -1)
            replies = pipe.execute()
        self.processed = int(replies[0] or 0)
        self.failed = int(replies[1] or 0)
        self.scheduled_size, self.retry_size, self.dead_size = (int(x) for x in replies[2:5])
        self.expired = int(replies[5] or 0)  # jobs not started by their deadline (expires_in / expires_at)
        sizes = replies[6:]  # per queue: its list's length, its priority jobs, the members of its groups' rotation
        grouped = waiting.grouped_sizes(self.redis, k, queue_names, sizes[2::3])
        self.queues = {
            name: int(sizes[3 * i]) + int(sizes[3 * i + 1]) + grouped[i] for i, name in enumerate(queue_names)
        }
        self.enqueued = sum(self.queues.values())
        self.process_list = ProcessSet()._load()
        self.processes = len(self.process_list)
        self.busy = sum(_count(p.info.get("busy")) for p in self.process_list)

    def history(self, days: int = 30) -> History:
        """Processed and failed per day, oldest first, for the last `days` days (UTC)."""
        import datetime as dt

        today = dt.datetime.now(dt.UTC).date()
        dates = [(today - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
        out: History = {"dates": dates}
        for name in ("processed", "failed"):
            values = self.redis.mget([self.keys.stat(name, d) for d in dates])
            out[name] = [int(v or 0) for v in values]
        return out


def stats_dict(s: Stats) -> dict[str, Any]:
    """Stats as plain data, as `gjiggler stats --json` prints it (no URLs, so no secrets)."""
    return {
        "processed": s.processed,
        "failed": s.failed,
        "expired": s.expired,
        "enqueued": s.enqueued,
        "busy": s.busy,
        "scheduled_size": s.scheduled_size,
        "retry_size": s.retry_size,
        "dead_size": s.dead_size,
        "queues": [{"name": name, "size": size, "latency": Queue(name).latency} for name, size in s.queues.items()],
        "processes": [
            {
                "identity": p.identity,
                "hostname": p.info.get("hostname"),
                "pid": p.info.get("pid"),
                "busy": p.info.get("busy", 0),
                "concurrency": p.info.get("concurrency"),
                "queues": p.info.get("queues", []),
                "rss": p.info.get("rss"),
                "quiet": p.info.get("quiet", False),
                "beat": p.info.get("beat"),
            }
            for p in s.process_list
        ],
    }


def in_flight() -> int:
    """Jobs fetched by live or dead processes and not yet acknowledged."""
    client, keys = _client_and_keys()
    identities = list(cast("set[str]", client.smembers(keys.processes)))
    with client.pipeline(transaction=False) as pipe:
        for identity in identities:
            pipe.llen(keys.working(identity))
        return sum(int(n) for n in pipe.execute())


# --- Read helpers for the web dashboard: each costs a bounded number of Redis calls, whatever the set size.


def redis_info() -> dict[str, Any]:
    """Server (Redis or Valkey) and version, memory, clients and uptime of the server in use."""
    client, _ = _client_and_keys()
    info = client.info()
    server, version = server_and_version(info)
    return {
        "server": server,
        "version": version,
        "used_memory": info.get("used_memory_human"),
        "peak_memory": info.get("used_memory_peak_human"),
        "clients": info.get("connected_clients"),
        "uptime_days": info.get("uptime_in_days"),
        "url": config.redacted(config.current().url),
    }


def entry_at(sorted_set: SortedSet, score: float, jid: str) -> Entry | None:
    """The entry of `sorted_set` with this score and jid, read by score (ZRANGEBYSCORE), not by a scan."""
    start = 0
    while True:
        rows = cast(
            "list[tuple[str, float]]",
            sorted_set.redis.zrangebyscore(sorted_set.key, score, score, start=start, num=WINDOW, withscores=True),
        )
        for raw, s in rows:
            entry = Entry(raw, sorted_set, s)
            if entry.jid == jid:
                return entry
        if len(rows) < WINDOW:
            return None
        start += WINDOW


def queue_entry_near(queue: Queue, position: int, jid: str, slack: int = WINDOW) -> Entry | None:
    """The job with this jid seen at `position` (0 = next to run), looked for within `slack` either side."""
    start = max(0, position - slack)
    return next((e for e in queue.page(start, 2 * slack + 1) if e.jid == jid), None)
