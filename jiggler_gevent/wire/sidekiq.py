"""Sidekiq's wire format (`wire="sidekiq"`): the one module that reads and writes Sidekiq payloads and heartbeats.

A Sidekiq payload is a JSON object: class, args, queue, jid, retry (true, false or a number), created_at,
enqueued_at, `wrapped` (the job a wrapper runs: an ActiveJob's class, a Django task's path), and after a failure
retry_count, error_class, error_message, failed_at, retried_at and (when asked for) error_backtrace (Base64 of
zlib-deflated JSON lines). Sidekiq up to 7 writes times as float seconds, Sidekiq 8 as
integer milliseconds: both are read (a number from 1e11 up is milliseconds), float seconds are written, which
every version reads. The internal payload (payload.py) gets `name` from class, `retries` and `dead` from retry and
dead, `kwargs` and our other fields (timeout, recoveries, result_ttl, unique_*, bid...) from the `jiggler` object
we nest them in, so Sidekiq keeps them and never trips on them (a top-level `at` would make Sidekiq's poller
schedule the job again, a top-level `bid` is a Sidekiq Pro batch). Fields of Sidekiq's we do not use travel in the
internal payload's `sidekiq` object and are written back as they were. `retry: true` and a missing timeout mean the
job's own options, read from the registry (wire.registered): this module imports neither job.py nor client.py.

`jiggler_gevent.sidekiq.push(...)` (sidekiq.py) enqueues a job for a Ruby Sidekiq worker class through this format.
"""

import base64
import binascii
import json
import time
import zlib
from typing import Any

from .. import config
from .. import payload as payload_mod
from . import Wire, registered

TIMES = ("created_at", "enqueued_at", "failed_at", "retried_at")
COPIED = ("args", "queue", "jid", "retry_count", "error_class", "error_message", "wrapped")  # same name, same meaning
INTERNAL_SIDEKIQ = ("name", "retries", "dead", "error_backtrace", "sidekiq", *COPIED, *TIMES)
MS_FROM = 1e11  # a timestamp this large is in milliseconds (Sidekiq 8): 1e11 s is the year 5138
NESTED = "jiggler"  # the object our own fields travel in
FOREIGN = "sidekiq"  # the internal payload's object of Sidekiq fields we do not use


def seconds(value: Any) -> Any:
    """A timestamp as float seconds: Sidekiq 8's integer milliseconds divided, anything else left as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000 if value >= MS_FROM else float(value)
    return value


def unpack_backtrace(value: Any) -> Any:
    """Sidekiq's error_backtrace (Base64 zlib JSON lines, or a plain list) as one string; others as they are."""
    if isinstance(value, list):
        return "\n".join(map(str, value))
    if isinstance(value, str):
        try:
            lines = json.loads(zlib.decompress(base64.b64decode(value)))
        except (ValueError, binascii.Error, zlib.error):
            return value
        if isinstance(lines, list):
            return "\n".join(map(str, lines))
    return value


def pack_backtrace(text: str) -> str:
    """A backtrace as Sidekiq stores it: its lines as JSON, deflated, in Base64."""
    lines = [line for line in text.splitlines() if line.strip()]
    return base64.b64encode(zlib.compress(json.dumps(lines).encode())).decode()


def retries(retry: Any, name: Any) -> int:
    """Sidekiq's `retry` as a number of retries: true is the job's own (25 unless it says), false 0."""
    if isinstance(retry, int) and not isinstance(retry, bool):
        return max(0, retry)
    if retry is False:
        return 0
    job = registered(name) if isinstance(name, str) else None
    return job.retries if job is not None else config.DEFAULT_RETRIES


def internal(job: dict[str, Any]) -> dict[str, Any]:
    """The internal payload of a parsed Sidekiq job (not checked); `job` is consumed."""
    ours = job.pop(NESTED, None)
    p: dict[str, Any] = {"name": job.pop("class", None)}
    for field in COPIED:
        if field in job:
            p[field] = job.pop(field)
    for field in TIMES:
        if field in job:
            p[field] = seconds(job.pop(field))
    retry, dead = job.pop("retry", True), job.pop("dead", True)
    p["retries"] = retries(retry, p["name"])
    p["dead"] = retry is not False and dead is not False
    if "error_backtrace" in job:
        p["error_backtrace"] = unpack_backtrace(job.pop("error_backtrace"))
    if job:
        p[FOREIGN] = job
    if isinstance(ours, dict):
        p.update(ours)
    if "timeout" not in p and isinstance(p["name"], str):
        own = registered(p["name"])
        if own is not None:
            p["timeout"] = own.timeout
    return p


def external(payload: dict[str, Any]) -> dict[str, Any]:
    """The Sidekiq job of an internal payload."""
    job: dict[str, Any] = {"class": payload.get("name") or "?"}
    for field in COPIED + TIMES:
        if field in payload:
            job[field] = payload[field]
    job["retry"] = _retry(payload.get("retries", config.DEFAULT_RETRIES), payload.get("dead", True))
    if payload.get("dead", True) is False and job["retry"] is not False:
        job["dead"] = False
    backtrace = payload.get("error_backtrace")
    if isinstance(backtrace, str):
        job["error_backtrace"] = pack_backtrace(backtrace)
    foreign = payload.get(FOREIGN)
    if isinstance(foreign, dict):
        job.update((k, v) for k, v in foreign.items() if k not in job)
    ours = {k: v for k, v in payload.items() if k not in INTERNAL_SIDEKIQ and v is not None and v != {}}
    if ours:
        job[NESTED] = ours
    return job


def _retry(retries: Any, dead: Any) -> bool | int:
    if not isinstance(retries, int) or isinstance(retries, bool):
        return True
    if retries == 0 and dead is False:
        return False
    return True if retries == config.DEFAULT_RETRIES else retries


class SidekiqWire(Wire):
    """Sidekiq's payloads and heartbeat, as Sidekiq's Web UI and API read them."""

    name = "sidekiq"

    def decode(self, raw: str) -> dict[str, Any]:
        return payload_mod.checked(internal(payload_mod.parse(raw)))

    def unwrap(self, parsed: dict[str, Any]) -> dict[str, Any]:
        return internal(parsed)

    def encode(self, payload: dict[str, Any]) -> str:
        return payload_mod.encode(external(payload))

    def salvage(self, raw: str, error: str) -> dict[str, Any]:
        """A dead-set entry that keeps every field of the job it could read, so Sidekiq can show and retry it."""
        try:
            entry = internal(payload_mod.parse(raw))
        except payload_mod.PayloadError:
            entry = {"name": "?", "raw": raw}
        if not isinstance(entry.get("args"), list):
            entry["args"] = []
        if not isinstance(entry.get("jid"), str):
            entry["jid"] = payload_mod.new_jid()
        entry.update(error_class="PayloadError", error_message=error, failed_at=time.time())
        return entry

    def process_fields(self, record: dict[str, Any]) -> dict[str, str]:
        """Sidekiq's heartbeat hash: info (what Sidekiq's Busy page reads, and ours), busy, beat, quiet, rss (KB)."""
        info = dict(record, tag=record.get("tag") or "", labels=record.get("labels") or [])
        return {
            "info": json.dumps(info),
            "busy": str(record.get("busy", 0)),
            "beat": repr(float(record.get("beat", 0.0))),
            "quiet": "true" if record.get("quiet") else "false",
            "rss": str(int(record.get("rss", 0)) // 1024),
            "rtt_us": str(record.get("rtt_us", 0)),
        }

    def work_entry(self, queue: Any, payload: dict[str, Any], run_at: float) -> dict[str, Any]:
        """As Sidekiq writes it: the job as a JSON string, the start in whole seconds."""
        return {"queue": queue, "payload": self.encode(payload), "run_at": int(run_at)}


SIDEKIQ = SidekiqWire()
