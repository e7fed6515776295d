"""Periodic entries for the worker processes of the scheduler tests (`-r tests.cron_jobs`).

Which entries a worker defines comes from the environment, so that each test picks its own:
JIGGLER_TEST_CRON is a comma-separated list of the sets below, JIGGLER_TEST_CRON_KEY the Redis key (inside the
test's namespace) that the jobs and the middleware record into.

  parked       "* * * * * *" (every second) into the queue `cron-parked`, which no test worker reads: the
               queue itself is the record of what the scheduler enqueued
  run          "* * * * * *" into `default`: the job runs, and a server middleware records its payload's
               periodic name and fire_at
  hourly       "0 * * * *" with arguments, keyword arguments and queue `reports`
  duplicate    two entries named "twice" with other expressions: the worker must refuse to start
  bad          an expression with a minute 61: the worker must refuse to start
"""

import json
import os
import time

from jiggler_gevent import config, job, middleware, periodic
from jiggler_gevent.middleware import JobContext, ServerMiddleware

KEY = os.environ.get("JIGGLER_TEST_CRON_KEY", "cron-test")
SETS = set(filter(None, os.environ.get("JIGGLER_TEST_CRON", "").split(",")))


@job(retries=0)
def tick(key: str, label: str = "") -> None:
    """RPUSH `label` to `key` (the middleware below records the payload's periodic fields)."""
    config.redis_client().rpush(key, label)


@job(queue="reports", retries=3, timeout=60.0)
def report(key: str, region: str, *, full: bool = False) -> None:
    """A job with options of its own, to show they carry over to the periodic payload."""
    config.redis_client().rpush(key, json.dumps([region, full]))


class RecordFire(ServerMiddleware):
    """Records, for each periodic job a worker runs, its entry name, fire_at, jid, enqueue and start times."""

    def before_process(self, ctx: JobContext) -> None:
        p = ctx.payload
        if "periodic" in p:
            record = {
                "periodic": p["periodic"],
                "fire_at": p["fire_at"],
                "jid": p["jid"],
                "enqueued_at": p["enqueued_at"],
                "started_at": time.time(),
                "pid": os.getpid(),
            }
            config.redis_client().rpush(KEY + ":runs", json.dumps(record))


if "parked" in SETS:
    periodic("* * * * * *", tick, args=(KEY, "parked"), name="every-second", queue="cron-parked")
if "run" in SETS:
    middleware.server.add(RecordFire())
    periodic("* * * * * *", tick, args=(KEY, "run"), name="every-second-run")
if "hourly" in SETS:
    periodic("0 * * * *", report, args=(KEY, "eu"), kwargs={"full": True}, name="hourly-report", tz="Europe/Berlin")
if "duplicate" in SETS:
    periodic("0 3 * * *", tick, args=(KEY,), name="twice")
    periodic("0 4 * * *", tick, args=(KEY,), name="twice")
if "bad" in SETS:
    periodic("61 * * * *", tick, args=(KEY,))
