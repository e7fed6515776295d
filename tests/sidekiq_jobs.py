"""Python jobs that Ruby Sidekiq pushes in tests/test_sidekiq_wire.py (`-r tests.sidekiq_jobs`).

Each records what it did under `jiggler:t:*` keys of the worker's Redis database (a test's own, see
sidekiq_ruby.claimed_db): runs are counted per jid, as the job's jid is known while it runs.
"""

import time

from jiggler_gevent import config, job
from jiggler_gevent.logs import current_job

RUNS = "jiggler:t:runs"  # hash jid -> how many times it ran to the end
STARTED = "jiggler:t:started"  # list of the jids that started
FAILED_ONCE = "jiggler:t:failed-once"  # set of the keys fail_once has failed for


def _jid() -> str:
    found = current_job.get()
    assert found is not None
    return found[1]


@job
def count(n: int) -> None:
    """Count one run of this jid."""
    config.redis_client().hincrby(RUNS, _jid(), 1)


@job
def fail(message: str) -> None:
    """Always fail with ValueError(message)."""
    raise ValueError(message)


@job
def fail_once(key: str) -> None:
    """Fail the first time it runs for `key`, then count runs like count()."""
    if config.redis_client().sadd(FAILED_ONCE, key):
        raise RuntimeError(f"first attempt for {key} fails")
    config.redis_client().hincrby(RUNS, _jid(), 1)


@job
def nap(seconds: float) -> None:
    """Say it started, sleep (cooperatively), then count the run."""
    config.redis_client().rpush(STARTED, _jid())
    time.sleep(seconds)
    config.redis_client().hincrby(RUNS, _jid(), 1)


@job(timeout=1)
def overrun(seconds: float) -> None:
    """A job with a 1 s timeout that sleeps `seconds`."""
    time.sleep(seconds)
    config.redis_client().hincrby(RUNS, _jid(), 1)


@job
def burn(seconds: float) -> None:
    """Hold the CPU for `seconds` without a cooperative yield (pre-emption must make it yield), then count."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    config.redis_client().hincrby(RUNS, _jid(), 1)


TWO_NOW, TWO_MOST = "jiggler:t:two-now", "jiggler:t:two-most"  # how many two_at_a_time run now, the most seen
_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
"""


@job(concurrency=2)
def two_at_a_time(seconds: float) -> None:
    """At most two run at once (`concurrency=2`): count itself in (keeping the most seen), sleep, out, and the run."""
    client = config.redis_client()
    client.eval(_ENTER, 2, TWO_NOW, TWO_MOST)
    time.sleep(seconds)
    client.decr(TWO_NOW)
    client.hincrby(RUNS, _jid(), 1)
