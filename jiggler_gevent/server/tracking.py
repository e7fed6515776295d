"""Tracked jobs (`result_ttl`): the status "running" as one starts, and its return value checked as it ends.

Every status is written by a Lua script in the same atomic step as what it describes: "queued" and "scheduled"
by the push (push_each.lua), "running" by the fetch that takes the payload (fetch.lua), the end of a run by the
settle (settle.lua), a cancellation of a waiting job by cancel.lua. A payload that came another way (BLMOVE, on
an idle worker's one queue) is started by start() in a round trip of its own. The Processor calls these two only
for payloads that have `result_ttl`, so other jobs pay nothing for them.

Guarantee: "running" is written in the same atomic step that reads NS:cancelled, so a tracked job cancelled
before its start never starts, and a cancel after it finds the job running and stops it (cancels.py). An
untracked job learns of its cancellation by pub/sub only, so one fetched in the instant of its cancellation may
start and is then stopped at once.
"""

import time

from .. import config
from .. import payload as payload_mod
from ..middleware import JobContext

# Tracked payloads whose start the fetch script wrote, by raw payload: True when it found the job cancelled.
# Filled by fetch.ReliableFetch.take, emptied by start() (and by the Manager for a payload that never got there).
Starts = dict[str, bool]


def start(ctx: JobContext, starts: Starts) -> bool:
    """True when the tracked job about to run was cancelled and must not start, else its status is "running".
    The fetch that took it has written that and read NS:cancelled already (in `starts`); otherwise both are done
    here, in one round trip. A cancel after that read finds the job running and stops it; one before is seen,
    whether or not its message has reached this process."""
    fetched = starts.pop(ctx.raw, None)
    if fetched is not None:
        return fetched
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
