"""Where the jobs of one queue wait, read for the queue's latency (api.Queue.latency, jiggler_queue_latency_seconds).

A queue's jobs wait in three places (scripts/lib_ready.lua): its plain list, the sorted set of its jobs with a
priority other than 0, and one list per group. Each list is oldest first at its right end. In the sorted set a
priority's jobs are in the order they were enqueued, but the bands of the priorities lie one after another, so its
longest waiting job is the first of some band: `candidates` reads the first of each band between the highest and the
lowest priority waiting (one command per band, pipelined: at most 201).
"""

from typing import Any, cast

from .keys import Keys

PRIO_BAND = 2**40  # the width of one priority's band of scores (lib_ready.lua's PRIO_BAND)


def candidates(client: Any, keys: Keys, queue: str, rotation: list[str] | None = None) -> list[str]:
    """The payloads of `queue` that may have waited longest: the oldest of its list and of each group, and the first
    of each of its priorities. `rotation`: the members of its groups' rotation, when the caller has read them
    already. One or two pipelined round trips, one more when it has jobs of more than one priority."""
    if rotation is None:
        rotation = cast("list[str]", client.zrange(keys.groups(queue), 0, -1))
    groups = [g for g in rotation if g]
    with client.pipeline(transaction=False) as pipe:
        pipe.lindex(keys.queue(queue), -1)
        for group in groups:
            pipe.lindex(keys.group(queue, group), -1)
        pipe.zrange(keys.prio(queue), 0, 0, withscores=True)
        pipe.zrange(keys.prio(queue), -1, -1, withscores=True)
        *oldest, first, last = pipe.execute()
    found = [raw for raw in oldest if raw is not None] + [raw for raw, _ in first]
    if first and last:
        found += _first_of_bands(client, keys.prio(queue), _band(first[0][1]) + 1, _band(last[0][1]))
    return found


def _band(score: float) -> int:
    """The band of a score: priority N's scores lie in [-N * PRIO_BAND, (1 - N) * PRIO_BAND)."""
    return int(score // PRIO_BAND)


def _first_of_bands(client: Any, key: str, low: int, high: int) -> list[str]:
    """The first payload of each band from `low` to `high` (included) of the sorted set `key`, in one round trip."""
    if low > high:
        return []
    with client.pipeline(transaction=False) as pipe:
        for band in range(low, high + 1):
            pipe.zrangebyscore(key, band * PRIO_BAND, f"({(band + 1) * PRIO_BAND}", start=0, num=1)
        return [raw for firsts in pipe.execute() for raw in firsts]


def grouped_sizes(client: Any, keys: Keys, queues: list[str], rotations: list[list[str]]) -> list[int]:
    """Per queue of `queues`, how many jobs wait in its groups, given the members of its rotation (`rotations`, as
    read by the caller; '' is the queue's own list, not a group): one pipelined round trip, none when no queue has
    groups."""
    group_keys = [[keys.group(q, g) for g in groups if g] for q, groups in zip(queues, rotations, strict=True)]
    if not any(group_keys):
        return [0] * len(queues)
    with client.pipeline(transaction=False) as pipe:
        for key in (key for of_queue in group_keys for key in of_queue):
            pipe.llen(key)
        lengths = iter(pipe.execute())
    return [sum(int(next(lengths)) for _ in of_queue) for of_queue in group_keys]
