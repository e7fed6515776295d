"""Jobs that log from their own code (`-r tests.log_jobs`), for tests/test_logs.py."""

import logging
import warnings

import gevent

from jiggler_gevent import config, job

log = logging.getLogger("tests.log_jobs")


@job
def chatty(key: str, tag: str, lines: int) -> None:
    """Log `lines` lines naming `tag`, yielding between them so concurrent jobs interleave; then RPUSH tag."""
    for i in range(lines):
        log.info("tag=%s line %d", tag, i)
        gevent.sleep(0.001)
    config.redis_client().rpush(key, tag)


@job(retries=0)
def fails_after_logging(key: str) -> None:
    """Log a line, then fail with a multi-line message (its traceback must stay one JSON object)."""
    log.warning("about to fail")
    config.redis_client().rpush(key, "run")
    raise ValueError("first line\nsecond line")


@job(retries=0)
def fails_with(key: str, message: str) -> None:
    """Record a run, then fail with `message`."""
    config.redis_client().rpush(key, "run")
    raise ValueError(message)


@job
def noisy(key: str) -> None:
    """What else can write to stderr: a warning, and a spawned greenlet that dies (gevent's hub reports it)."""
    warnings.warn("a thing to warn about", UserWarning, stacklevel=1)
    gevent.spawn(_explode).join()
    config.redis_client().rpush(key, "run")


def _explode() -> None:
    raise KeyError("from a spawned greenlet")
