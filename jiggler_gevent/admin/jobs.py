"""Job(jid): one job's status, result and cancellation; BatchStatus(bid) and Batches(): batches. Re-exported by api.py.

A job with `result_ttl` has its status in NS:result:<jid>, written by the scripts that change it. Any other job is
looked for where it can be (as Sidekiq's API does): the scheduled and retry sets (ZSCAN with a MATCH on its jid),
the working lists of live processes, the queues (read in windows) and the dead set. That costs a scan, so it is for
tools and pages, not hot paths. A cancellation is remembered for CANCEL_KEEP seconds (NS:cancelled).
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from .. import config, scripts, wire
from .. import payload as payload_mod
from ..connect import MAX_BLOCK, block_for
from ..errors import CancelRefused, JobCancelled, JobFailed
from ..keys import Keys

STATUSES = ("scheduled", "queued", "running", "retrying", "done", "dead", "cancelled", "expired", "unknown")
ENDED = ("done", "dead", "cancelled", "expired")
LIST_WINDOW = 1000


@dataclass
class Found:
    """Where a job was found: its status, and for a waiting or dead one, the key and the payload as stored."""

    status: str
    key: str = ""
    raw: str = ""


def _client_and_keys() -> "tuple[redis.Redis, Keys]":
    cfg = config.current()
    return config.redis_client(cfg.url), cfg.keys


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Job:
    """One job by its jid: `status`, `result(timeout)`, `cancel()`."""

    def __init__(self, jid: str) -> None:
        if not isinstance(jid, str):
            raise TypeError(f"jid must be a string, not {type(jid).__name__}")
        self.jid = jid
        self.redis, self.keys = _client_and_keys()
        self.wire = wire.of(self.keys)  # payloads are read through it: jiggler's format or Sidekiq's
        self._needle = self.wire.marker(jid)

    @property
    def status(self) -> str:
        """One of "scheduled", "queued", "running", "retrying", "done", "dead", "cancelled", "expired" (not started
        by its deadline: never run), "unknown"."""
        return self._locate().status

    def info(self) -> dict[str, Any]:
        """What is known of the job: jid, status, what it reported (progress, message; cursor and iterations for an
        iterable job) and, for a tracked job, its stored fields (result or error, times, the workflow it is a step
        of)."""
        tracked = cast("dict[str, str]", self.redis.hgetall(self.keys.result(self.jid)))
        info: dict[str, Any] = {"jid": self.jid, "status": self._locate(tracked).status}
        for field in ("started_at", "updated_at"):
            if field in tracked:
                info[field] = float(tracked[field])
        if "result" in tracked:
            info["result"] = json.loads(tracked["result"])
        if "error" in tracked:
            info.update(json.loads(tracked["error"]))
        if "workflow" in tracked:
            info["workflow"] = tracked["workflow"]  # a step of that workflow
        info.update(self._reported())
        return info

    def _reported(self) -> dict[str, Any]:
        """What the job reported as it ran (NS:state:<jid>): progress and message once it called progress(), and
        for an iterable job its last stored cursor and iterations; nothing for a job that reported nothing."""
        state = cast("dict[str, str]", self.redis.hgetall(self.keys.job_state(self.jid)))
        out: dict[str, Any] = {}
        if "progress" in state:
            out.update(progress=float(state["progress"]), message=state.get("message", ""))
        if "cursor" in state:
            out["cursor"] = json.loads(state["cursor"])
            out["iterations"] = int(state.get("iterations", 0))
        return out

    def _locate(self, tracked: dict[str, str] | None = None) -> Found:
        if not self.jid:
            return Found("unknown")
        if tracked is None:
            tracked = cast("dict[str, str]", self.redis.hgetall(self.keys.result(self.jid)))
        if tracked.get("status") in ENDED:
            return Found(tracked["status"])
        if self.redis.zscore(self.keys.cancelled, self.jid) is not None:
            return Found("cancelled")
        k = self.keys
        for status, key in (("scheduled", k.schedule), ("retrying", k.retry)):
            raw = self._in_sorted_set(key)
            if raw is not None:
                return Found(status, key, raw)
        for name in sorted(cast("set[str]", self.redis.smembers(k.queues))):
            key, raw = self._in_queue(name)
            if raw is not None:
                return Found("queued", key, raw)
        for identity in cast("set[str]", self.redis.smembers(k.processes)):
            if self._in_list(k.working(identity)) is not None:
                return Found("running")
        raw = self._in_sorted_set(k.dead)
        if raw is not None:
            return Found("dead", k.dead, raw)
        return Found(tracked.get("status") or "unknown")

    def _in_queue(self, name: str) -> tuple[str, str | None]:
        """Where in queue `name` the job waits (its list, its priority set, or one of its groups' lists), and its
        payload (None when it is not there)."""
        k = self.keys
        raw = self._in_list(k.queue(name))
        if raw is not None:
            return k.queue(name), raw
        raw = self._in_sorted_set(k.prio(name))
        if raw is not None:
            return k.prio(name), raw
        for group in cast("list[str]", self.redis.zrange(k.groups(name), 0, -1)):
            raw = self._in_list(k.group(name, group)) if group else None
            if raw is not None:
                return k.group(name, group), raw
        return k.queue(name), None

    def _in_sorted_set(self, key: str) -> str | None:
        pattern = f"*{_glob_escape(self._needle)}*"
        for raw, _ in self.redis.zscan_iter(key, match=pattern, count=1000):
            return cast(str, raw)
        return None

    def _in_list(self, key: str) -> str | None:
        start = 0
        while True:
            raws = cast("list[str]", self.redis.lrange(key, start, start + LIST_WINDOW - 1))
            for raw in raws:
                if self._needle in raw:
                    return raw
            if len(raws) < LIST_WINDOW:
                return None
            start += LIST_WINDOW

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end and return its value (JobFailed: it failed for good; JobCancelled; TimeoutError
        when `timeout` seconds pass first). Blocks on Redis (BLMOVE), without polling; only jobs with
        `result_ttl` keep a result: for another one that has not ended, ValueError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.keys.result(self.jid)
        while True:
            tracked = cast("dict[str, str]", self.redis.hgetall(key))
            if not tracked:
                return self._untracked()
            status = tracked.get("status")
            if status == "done":
                return json.loads(tracked.get("result", "null"))
            if status in ("dead", "cancelled", "expired"):
                self._raise_ended(status, tracked.get("error", "{}"))
            left = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self.jid} did not end within {timeout}s (status: {status})")
            done = key + ":done"
            # Blocks at most MAX_BLOCK (connect.py), then reads the status again: a missed wake-up costs that much.
            wait: Any = block_for(left)  # redis-py types BLMOVE's timeout as int; Redis takes fractions
            self.redis.blmove(done, done, wait, "RIGHT", "LEFT")

    def _untracked(self) -> Any:
        found = self._locate({})
        if found.status in ("dead", "cancelled"):
            error = "{}"
            if found.status == "dead":
                item = self.wire.read(found.raw) if found.raw else {}
                error = json.dumps({f: item.get(f, "") for f in ("error_class", "error_message")})
            self._raise_ended(found.status, error)
        raise ValueError(
            f"job {self.jid} is {found.status}: only a job enqueued with result_ttl keeps its result "
            "(or its result_ttl has passed)"
        )

    def _raise_ended(self, status: str, error: str) -> None:
        if status == "cancelled":
            raise JobCancelled(self.jid)
        details = json.loads(error)
        raise JobFailed(self.jid, str(details.get("error_class", "")), str(details.get("error_message", "")))

    def cancel(self) -> bool:
        """Cancel the job: one waiting never starts; one running is stopped at its next safe point, also while it
        computes. True when it was found not yet ended. CancelRefused (wire="sidekiq"): a Ruby Sidekiq process runs
        it, which no cancellation reaches."""
        found = self._locate()
        if found.status == "unknown":
            self._refuse_if_run_elsewhere()
        if found.status in ENDED or found.status == "unknown":
            return False  # an unknown jid is not recorded: its status must not read "cancelled" later
        now = time.time()
        args: list[Any] = [self.jid, now, now - config.CANCEL_KEEP, self.keys.cancel_channel, found.raw]
        item: dict[str, Any] = {}
        if found.raw:
            try:
                item = self.wire.decode(found.raw)
            except payload_mod.PayloadError:
                item = {}
        lock, bid, ttl = payload_mod.unique_lock(item), payload_mod.batch_id(item), payload_mod.result_ttl(item)
        args += [self.keys.unique(lock) if lock else "", self.keys.batch(bid) if bid else ""]
        args += [self.keys.result(self.jid), "" if ttl is None else ttl, self.keys.queue_prefix]
        args += [config.BATCH_TTL, config.RESULT_PENDING_TTL]
        # Nothing waiting: KEYS[2] is not read, but must still be a key of the namespace's slot (Redis Cluster).
        keys = [self.keys.cancelled, found.key or self.keys.cancelled, self.keys.queues, self.keys.wake]
        scripts.register(self.redis).cancel(keys=keys, args=args, client=self.redis)
        return True

    def _refuse_if_run_elsewhere(self) -> None:
        """With Sidekiq's key layout, other processes may share the queues: CancelRefused when a live one that is
        not a jiggler worker of this namespace (its heartbeat names no such namespace) shows this job in its work
        hash. A jiggler worker's running jobs are in its working list (found by _locate): what its work hash still
        shows there has ended."""
        k = self.keys
        if k.wire != "sidekiq":
            return
        for identity in sorted(cast("set[str]", self.redis.smembers(k.processes))):
            info = cast("str | None", self.redis.hget(k.process(identity), "info"))
            if info is None or _namespace_of(info) == k.namespace:
                continue
            for work_key in k.work_keys(identity):
                for text in cast("list[str]", self.redis.hvals(work_key)):
                    payload = self.wire.read_work(text).get("payload")
                    if isinstance(payload, dict) and payload.get("jid") == self.jid:
                        raise CancelRefused(
                            f"job {self.jid} is running in {identity}, a process that is not a jiggler worker (a "
                            "Ruby Sidekiq process): it never reads jiggler's cancellations, so it cannot be cancelled"
                        )

    def __repr__(self) -> str:
        return f"<Job {self.jid}>"


def _namespace_of(info: str) -> object:
    """The namespace a heartbeat's JSON info names (a jiggler worker's does; a Ruby Sidekiq process's does not)."""
    try:
        value = json.loads(info)
    except (ValueError, RecursionError):
        return None
    return value.get("namespace") if isinstance(value, dict) else None


class BatchStatus:
    """A batch read when created: total, pending, failures, complete, success, description, created_at,
    complete_at, success_at, failed_jids. LookupError for an unknown (or expired) batch."""

    def __init__(self, bid: str) -> None:
        self.bid = bid
        client, keys = _client_and_keys()
        key = keys.batch(bid)
        with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.smembers(key + ":failed")
            fields, failed = pipe.execute()
        if not fields:
            raise LookupError(f"no batch {bid!r} (unknown, or expired {config.BATCH_TTL // 86400} days after it ended)")
        self.description: str = fields.get("description", "")
        self.created_at = float(fields.get("created_at") or 0)
        self.total = int(fields.get("total") or 0)
        self.pending = int(fields.get("pending") or 0)
        self.failed_jids: list[str] = sorted(failed)
        self.failures = len(self.failed_jids)
        self.complete_at = float(fields["complete_at"]) if fields.get("complete_at") else None
        self.success_at = float(fields["success_at"]) if fields.get("success_at") else None
        self.complete = self.complete_at is not None
        self.success = self.success_at is not None
        self.callbacks = [which for which in ("complete", "success") if f"cb_{which}" in fields]

    def as_dict(self) -> dict[str, Any]:
        """The fields above, as `gjiggler batches --json` prints them."""
        names = ("bid", "description", "created_at", "total", "pending", "failures", "complete", "success")
        return {n: getattr(self, n) for n in (*names, "complete_at", "success_at", "failed_jids")}

    def __repr__(self) -> str:
        return f"<BatchStatus {self.bid} {self.total - self.pending}/{self.total} done, {self.failures} failed>"


class Paged:
    """A listing read a page at a time (`page(offset, limit)`); iterating reads every page, 100 entries each."""

    def page(self, offset: int = 0, limit: int = 25) -> list[Any]:
        """Up to `limit` entries from the `offset`-th."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        offset = 0
        while True:
            page = self.page(offset, 100)
            yield from page
            if len(page) < 100:
                return
            offset += 100


class Batches(Paged):
    """The batches on the namespace, newest first (those expired are left out)."""

    def __init__(self) -> None:
        self.redis, self.keys = _client_and_keys()

    def __len__(self) -> int:
        return int(self.redis.zcard(self.keys.batches))

    def page(self, offset: int = 0, limit: int = 25) -> list[BatchStatus]:
        """Up to `limit` batches from the `offset`-th newest."""
        bids = cast("list[str]", self.redis.zrevrange(self.keys.batches, offset, offset + limit - 1))
        found = []
        for bid in bids:
            try:
                found.append(BatchStatus(bid))
            except LookupError:
                self.redis.zrem(self.keys.batches, bid)
        return found
