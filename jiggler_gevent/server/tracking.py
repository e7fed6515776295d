"""Tracked jobs (`result_ttl`): the status "running" as one starts, and its return value checked as it ends.

The other statuses are written by Lua scripts in the same atomic step as what they describe: "queued" and
"scheduled" by the push (push_each.lua), the end of a run by the settle (settle.lua), a cancellation of a
waiting job by cancel.lua. The Processor calls these two only for payloads that have `result_ttl`, so other
jobs pay nothing for them. Because start() reads NS:cancelled in the round trip that marks the start, a tracked
job cancelled before it starts never starts; an untracked one learns of its cancellation by pub/sub only
(cancels.py), so one fetched in the instant of its cancellation may start and is then stopped at once.
"""

import time

from .. import config
from .. import payload as payload_mod
from ..middleware import JobContext


def start(ctx: JobContext) -> bool:
    """Write "running" (and when it started) for a tracked job about to run, and read in the same round trip
    whether it was cancelled: True means it must not start. A cancel that lands after this read finds the job
    running and stops it; one before is seen here, whether or not its message has reached this process."""
    cfg = config.current()
    key = cfg.keys.result(ctx.jid)
    pipe = config.redis_client(cfg.url).pipeline(transaction=False)
    pipe.hset(key, mapping={"status": "running", "started_at": repr(time.time())})
    pipe.expire(key, config.RESULT_PENDING_TTL)
    pipe.zscore(cfg.keys.cancelled, ctx.jid)
    return pipe.execute()[2] is not None


def result_error(ctx: JobContext) -> TypeError | None:
    """The TypeError that fails a tracked job whose return value would not survive JSON, or None."""
    if payload_mod.survives_json(ctx.result):
        return None
    return TypeError(
        f"the return value of {ctx.name} ({type(ctx.result).__name__} {ctx.result!r:.80}) does not survive a "
        "JSON round trip; a job with result_ttl must return str, int, float, bool, None, lists and dicts with "
        "string keys"
    )
