"""`settings.JIGGLER`: one dict whose keys mirror the `gjiggler worker` options.

A key is the option's name in upper case: REDIS_URL, NAMESPACE, CONCURRENCY, QUEUES, STRICT, TIMEOUT,
PROCESSES, PREEMPT, POLL_INTERVAL, HEARTBEAT_INTERVAL, VERBOSE, REQUIRES, MAX_MEMORY, MAX_JOBS, WIRE,
WAIT_REPLICAS (and any option the worker gains later). The keys come from the worker's table of options
(jiggler_gevent.options), the one place options are defined. One more key is for the processes that enqueue:
ENQUEUE_ON_COMMIT (commit.py).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ... import config, options

SETTING = "JIGGLER"
APP_KEYS = {"ENQUEUE_ON_COMMIT"}  # keys for the processes that enqueue, not worker options


def check(jiggler: Mapping[str, Any]) -> None:
    """Raise ImproperlyConfigured when `jiggler` is not a dict of known keys."""
    if not isinstance(jiggler, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict, not {type(jiggler).__name__}")
    unknown = sorted(set(jiggler) - set(options.SETTINGS) - APP_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.{SETTING}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys mirror the worker options: {', '.join(sorted(options.SETTINGS))}, and ENQUEUE_ON_COMMIT"
        )
    if not isinstance(jiggler.get("ENQUEUE_ON_COMMIT", False), bool):
        raise ImproperlyConfigured(f"settings.{SETTING}['ENQUEUE_ON_COMMIT'] must be True or False")


def from_settings() -> dict[str, Any]:
    """`settings.JIGGLER` (empty when not set), checked."""
    from django.conf import settings

    jiggler = getattr(settings, SETTING, {})
    check(jiggler)
    return dict(jiggler)


def configure_from_settings() -> config.Config:
    """Make REDIS_URL and NAMESPACE from `settings.JIGGLER` the ones in force in this process, and pushes wait for
    their transaction's commit with ENQUEUE_ON_COMMIT."""
    jiggler = from_settings()
    if jiggler.get("ENQUEUE_ON_COMMIT"):
        from .commit import enqueue_on_commit

        enqueue_on_commit(True)
    return config.configure(redis_url=jiggler.get("REDIS_URL"), namespace=jiggler.get("NAMESPACE"))


def worker_args(jiggler: Mapping[str, Any], cli_args: Sequence[str]) -> list[str]:
    """`gjiggler worker` arguments: those from `jiggler`, then `cli_args`; an option on the command line
    replaces its setting (also for the repeatable -q and -r, which would otherwise add up)."""
    check(jiggler)
    given = options.given(cli_args)
    from_jiggler = {
        option.field: jiggler[key]
        for key, option in options.SETTINGS.items()
        if key in jiggler and option.field not in given
    }
    return options.to_argv(from_jiggler) + list(cli_args)
