"""Where the jobs of one queue wait, read for the queue's latency (api.Queue.latency, jiggler_queue_latency_seconds).

A queue's jobs wait in three places (scripts/lib_ready.lua): its plain list, the sorted set of its jobs with a
priority other than 0, and one list per group. Each list is oldest first at its right end. In the sorted set a
priority's jobs are in the order they were enqueued, but the bands of the priorities lie one after another, so its
longest waiting job is the first of some band: `candidates` reads the first of the highest band (the next to start)
and of the lowest (the one most likely to have been passed over), not the bands between them.
"""

from typing import Any, cast

from .keys import Keys

PRIO_BAND = 2**40  # the width of one priority's band of scores (lib_ready.lua's PRIO_BAND)


def candidates(client: Any, keys: Keys, queue: str, rotation: list[str] | None = None) -> list[str]:
    """The payloads of `queue` that may have waited longest: the oldest of its list and of each group, and the first
    of its highest and lowest priority. `rotation`: the members of its groups' rotation, when the caller has read
    them already. One or two pipelined round trips, one more when it has priority jobs."""
    if rotation is None:
        rotation = cast("list[str]", client.zrange(keys.groups(queue), 0, -1))
    groups = [g for g in rotation if g]
    with client.pipeline(transaction=False) as pipe:
        pipe.lindex(keys.queue(queue), -1)
        for group in groups:
            pipe.lindex(keys.group(queue, group), -1)
        pipe.zrange(keys.prio(queue), 0, 0)
        pipe.zrange(keys.prio(queue), -1, -1, withscores=True)
        *oldest, first, last = pipe.execute()
    found = [raw for raw in oldest if raw is not None] + list(first)
    if last:
        band = int(last[0][1] // PRIO_BAND)  # scores of priority N lie in [-N * PRIO_BAND, (1 - N) * PRIO_BAND)
        lowest = client.zrangebyscore(keys.prio(queue), band * PRIO_BAND, (band + 1) * PRIO_BAND, start=0, num=1)
        found += list(lowest)
    return found
