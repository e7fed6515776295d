"""`settings.JIGGLER`: one dict whose keys mirror the `gjiggler worker` options.

A key is the option's parameter name in upper case: REDIS_URL, NAMESPACE, CONCURRENCY, QUEUES, STRICT,
TIMEOUT, PROCESSES, PREEMPT, POLL_INTERVAL, VERBOSE, REQUIRES (and any option the worker gains later).
The keys are read from the click command itself, so the CLI stays the one place options are defined.
"""
from typing import Any, Dict, List, Mapping, Sequence

import click
from django.core.exceptions import ImproperlyConfigured

from ... import config

SETTING = "JIGGLER"
# Worker options that make no sense in settings: --django is what `manage.py gjiggler` adds itself.
_NOT_SETTINGS = {"django_setup", "help"}


def worker_options() -> Dict[str, click.Option]:
    """The worker command's options by their JIGGLER key."""
    from ...cli import worker

    return {p.name.upper(): p for p in worker.params
            if isinstance(p, click.Option) and p.name and p.name not in _NOT_SETTINGS}


def check(jiggler: Mapping[str, Any]) -> None:
    """Raise ImproperlyConfigured when `jiggler` is not a dict of known keys."""
    if not isinstance(jiggler, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict, not {type(jiggler).__name__}")
    known = worker_options()
    unknown = sorted(set(jiggler) - set(known))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.{SETTING}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys mirror the worker options: {', '.join(sorted(known))}")


def from_settings() -> Dict[str, Any]:
    """`settings.JIGGLER` (empty when not set), checked."""
    from django.conf import settings

    jiggler = getattr(settings, SETTING, {})
    check(jiggler)
    return dict(jiggler)


def configure_from_settings() -> config.Config:
    """Make REDIS_URL and NAMESPACE from `settings.JIGGLER` the ones in force in this process."""
    jiggler = from_settings()
    return config.configure(redis_url=jiggler.get("REDIS_URL"), namespace=jiggler.get("NAMESPACE"))


def _given_on_command_line(cli_args: Sequence[str]) -> set:
    from click.core import ParameterSource

    from ...cli import worker

    ctx = worker.make_context("worker", list(cli_args), resilient_parsing=True)
    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def _render(option: click.Option, value: Any) -> List[str]:
    """One setting as command-line arguments, in the `--long=value` form (safe for any value)."""
    flag = max(option.opts, key=len)
    if value is None:
        return []
    if option.is_flag:
        return [flag] if value else []
    if option.multiple:
        items = [value] if isinstance(value, str) or _is_pair(value) else list(value)
        return [f"{flag}={_text(item)}" for item in items]
    return [f"{flag}={_text(value)}"]


def _is_pair(value: Any) -> bool:
    """A single ("name", weight) queue given where a list of them was expected."""
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int)


def _text(item: Any) -> str:
    if isinstance(item, (list, tuple)):
        return ",".join(str(part) for part in item)
    return str(item)


def worker_args(jiggler: Mapping[str, Any], cli_args: Sequence[str]) -> List[str]:
    """`gjiggler worker` arguments: those from `jiggler`, then `cli_args`; an option on the command line
    replaces its setting (also for the repeatable -q and -r, which would otherwise add up)."""
    check(jiggler)
    options = worker_options()
    given = _given_on_command_line(cli_args)
    args: List[str] = []
    for key, option in options.items():
        if key in jiggler and option.name not in given:
            args.extend(_render(option, jiggler[key]))
    return args + list(cli_args)
