"""Periodic entries as the running workers published them: `api.PeriodicSet()` (public through jiggler_gevent.api).

Each worker process with periodic entries names its table's signature in its heartbeat and keeps the table in
NS:cron:table:<signature>; this module reads the tables of the live processes, the last fire times
(NS:cron:last), and computes the next fire times with the scheduler's own function, without loading any user
code. An entry that no live process has any more is not listed (a process's record expires a minute after it
dies, and is removed when it stops).
"""

import json
import time
from collections.abc import Iterator
from typing import Any, cast

from .. import config
from ..client import Client
from ..periodic import build_payload, next_fire

FIELDS = ("name", "cron", "tz", "job", "queue", "next_at", "last_at")


class PeriodicEntry:
    """One periodic entry: `name`, `cron`, `tz`, `job` (its wire name), `queue`, `args`, `kwargs`, `next_at` and
    `last_at` (unix seconds: the next fire time, and the last one enqueued, or None)."""

    def __init__(self, item: dict[str, Any], last_at: float | None, now: float, cfg: config.Config) -> None:
        self.item, self.cfg = item, cfg
        self.name: str = item["name"]
        self.cron: str = item["cron"]
        self.tz: str = item.get("tz", "UTC")
        self.job: str = item["job"]
        self.queue: str = item["queue"]
        self.args: list[Any] = item.get("args") or []
        self.kwargs: dict[str, Any] = item.get("kwargs") or {}
        self.last_at = last_at
        try:
            self.next_at: float | None = next_fire(self.cron, self.tz, now)
        except (ValueError, KeyError):  # published by a release this one cannot read: shown, with no next time
            self.next_at = None

    def enqueue_now(self) -> str:
        """Push the entry's job now, as the scheduler would (its `fire_at` is now); returns the jid. The schedule
        is not changed: the next fire time still enqueues it."""
        jid = Client(self.cfg).push(build_payload(self.item, time.time()))
        assert jid is not None  # a periodic entry's payload carries no unique lock
        return jid

    def as_dict(self) -> dict[str, Any]:
        """name, cron, tz, job, queue, next_at, last_at: what `gjiggler cron --json` prints for it."""
        return {f: getattr(self, f) for f in FIELDS}

    def __repr__(self) -> str:
        return f"<PeriodicEntry {self.name} {self.cron!r} {self.tz} -> {self.job}>"


class PeriodicSet:
    """The periodic entries of the live worker processes, by name. Where processes publish one name with other
    settings (during a deploy), the entry of the most recently started process is shown."""

    def __init__(self) -> None:
        self.cfg = config.current()
        self.redis = config.redis_client(self.cfg.url)
        self.keys = self.cfg.keys

    def _signatures(self) -> list[str]:
        """The table signatures of the live processes, the most recently started first."""
        identities = sorted(cast("set[str]", self.redis.smembers(self.keys.processes)))
        with self.redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hget(self.keys.process(identity), "info")
            infos = [json.loads(raw) for raw in pipe.execute() if raw]
        newest: dict[str, float] = {}
        for info in infos:
            signature = info.get("cron")
            if isinstance(signature, str):
                newest[signature] = max(newest.get(signature, 0.0), float(info.get("started_at") or 0.0))
        return sorted(newest, key=lambda s: -newest[s])

    def _load(self) -> list[PeriodicEntry]:
        signatures = self._signatures()
        if not signatures:
            return []
        tables = cast("list[str | None]", self.redis.mget([self.keys.cron_table(s) for s in signatures]))
        items: dict[str, dict[str, Any]] = {}
        for table in tables:
            for item in json.loads(table) if table else []:
                items.setdefault(item["name"], item)
        names = sorted(items)
        lasts = cast("list[str | None]", self.redis.hmget(self.keys.cron_last, names))
        now = time.time()
        return [
            PeriodicEntry(items[name], float(last) if last is not None else None, now, self.cfg)
            for name, last in zip(names, lasts, strict=True)
        ]

    def __iter__(self) -> Iterator[PeriodicEntry]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def get(self, name: str) -> PeriodicEntry | None:
        """The entry named `name`, or None when no live process has it."""
        return next((e for e in self._load() if e.name == name), None)
