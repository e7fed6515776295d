"""Limits, Limit: the limiters used on the namespace (each records itself in NS:limits when first used), with
how much of each is in use now, read on Redis' clock. Re-exported by api.py.

What Redis holds is read as data, never trusted: a description or a count that is not what a limiter writes
(another program's, or a damaged one) gives a limiter of kind "?" or a count of 0, never an exception."""

import math
from collections.abc import Iterator
from typing import Any, cast

from .. import config
from ..limits import KINDS, describe, is_group_limiter

FIELDS = ("name", "kind", "size", "per", "in_use")


class Limit:
    """One limiter: `name`, `kind` ("concurrent", "window", "bucket"), `size`, `per` (seconds; 0 for
    concurrent) and `in_use` (holders now, or acquisitions in the current window or interval)."""

    def __init__(self, name: str, kind: str, size: int, per: float, in_use: int) -> None:
        self.name, self.kind, self.size, self.per, self.in_use = name, kind, size, per, in_use

    def as_dict(self) -> dict[str, Any]:
        """The fields above, as `gjiggler limits --json` prints them."""
        return {f: getattr(self, f) for f in FIELDS}

    def __repr__(self) -> str:
        return f"<Limit {self.kind} {self.name!r} {self.in_use}/{self.size}>"


class Limits:
    """Every limiter on the namespace, by name; a fair group's limiter only while a slot of it is in use (its last
    release unlists it; one whose slots all expired unreleased is left out here)."""

    def __init__(self) -> None:
        cfg = config.current()
        self.redis, self.keys = config.redis_client(cfg.url), cfg.keys

    def _load(self) -> list[Limit]:
        table = cast("dict[str, str]", self.redis.hgetall(self.keys.limits))
        names = sorted(table)
        seconds, micros = self.redis.time()
        now = seconds + micros / 1e6
        found = [(name, _described(table[name])) for name in names]
        with self.redis.pipeline(transaction=False) as pipe:
            for name, d in found:
                self._queue_count(pipe, name, d, now)
            replies = pipe.execute()
        listed = [
            Limit(name, d["kind"], d["size"], d["per"], _in_use(d, r, now))
            for (name, d), r in zip(found, replies, strict=True)
        ]
        return [x for x in listed if x.in_use or not is_group_limiter(x.name)]

    def _queue_count(self, pipe: Any, name: str, d: dict[str, Any], now: float) -> None:
        key = self.keys.limit(name)
        if d["kind"] == "concurrent":
            pipe.zcount(key, f"({now * 1000:.0f}", "+inf")
        elif d["kind"] == "window":
            pipe.zcount(key, f"({(now - d['per']) * 1e6:.0f}", "+inf")
        elif d["kind"] == "bucket":
            pipe.hmget(key, "interval", "count")
        else:
            pipe.exists(key)  # a reply in its place, not read

    def __iter__(self) -> Iterator[Limit]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def get(self, name: str) -> Limit | None:
        """The limiter named `name`, or None."""
        return next((x for x in self._load() if x.name == name), None)


def _described(raw: str) -> dict[str, Any]:
    """A limiter's description as Limit takes it: kind (one of KINDS, else "?"), size and per (0 if unreadable)."""
    d = describe(raw)
    kind = d.get("kind") if d.get("kind") in KINDS else "?"
    return {"kind": kind, "size": int(_number(d.get("size"))), "per": _number(d.get("per"))}


def _number(value: object) -> float:
    """A non-negative finite number, or 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return min(float(value), 1e15)


def _in_use(d: dict[str, Any], reply: Any, now: float) -> int:
    if d["kind"] in ("concurrent", "window"):
        return int(reply)
    if d["kind"] != "bucket":
        return 0
    interval, count = reply
    per_ms = d["per"] * 1000
    try:
        current = int(now * 1000 // per_ms) if per_ms > 0 else None
        return int(count or 0) if interval is not None and current is not None and int(interval) == current else 0
    except ValueError:  # not what bucket_acquire.lua writes
        return 0
