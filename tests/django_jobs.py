"""A job for the Django worker of tests/test_django.py (`manage.py gjiggler -r tests.django_jobs`): which driver
Django's connection used, and when its query ran by PostgreSQL's clock (to tell overlapping queries from
queries run one after another)."""

import json
import sys

from django.db import connection
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from jiggler_gevent import config, job


@job(retries=0)
def timed_query(key: str, seconds: float) -> None:
    """pg_sleep(seconds) in one statement on Django's connection; RPUSH to `key` the driver's module, the
    PostgreSQL drivers loaded in this process, and the statement's start and end."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM statement_timestamp()), extract(epoch FROM clock_timestamp()), "
            "pg_backend_pid() FROM pg_sleep(%s)",
            [seconds],
        )
        started, ended, backend = cursor.fetchone()
    record = {
        "driver": connection.Database.__name__,
        "is_psycopg3": is_psycopg3,
        "loaded": sorted(m for m in ("psycopg", "psycopg2", "psycogreen") if m in sys.modules),
        "started": float(started),
        "ended": float(ended),
        "backend": backend,
    }
    config.redis_client().rpush(key, json.dumps(record))
