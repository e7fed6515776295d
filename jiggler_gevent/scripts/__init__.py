"""The Lua scripts jiggler_gevent runs in Redis: one file each beside this module, read once.

Each script is atomic: no other client sees it half done. Every check-and-take across processes is one of
them. Every key a script touches is passed in KEYS or, where the number of queues varies, built from the
queue key prefix in ARGV; the header of each file names its KEYS and ARGV. Key names come from keys.py.
"""

from dataclasses import dataclass
from importlib import resources

import redis
from redis.commands.core import Script

INCLUDE = "--#include "  # a line `--#include NAME` is replaced by the text of NAME.lua (shared Lua functions)


def _source(name: str) -> str:
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    return "".join(_source(line[len(INCLUDE) :].strip()) if line.startswith(INCLUDE) else line for line in lines)


SOURCES = {
    name: _source(name)
    for name in (
        *("push", "fetch", "settle", "adopt", "move_due", "move_one", "cron_lease", "cron_fire"),
        *("push_each", "unique_release", "concurrent_acquire", "concurrent_release"),
        *("window_acquire", "bucket_acquire", "cancel", "job_max", "release_holds"),
    )
}
_ATTRIBUTE = "_jiggler_gevent_scripts"


@dataclass(frozen=True)
class Scripts:
    """The scripts bound to one client; each call uses EVALSHA and reloads the script after a Redis restart."""

    push: Script
    fetch: Script
    settle: Script
    adopt: Script
    move_due: Script
    move_one: Script
    cron_lease: Script
    cron_fire: Script
    push_each: Script
    unique_release: Script
    concurrent_acquire: Script
    concurrent_release: Script
    window_acquire: Script
    bucket_acquire: Script
    cancel: Script
    job_max: Script
    release_holds: Script


def register(client: "redis.Redis") -> Scripts:
    """The scripts bound to `client`: made once per client and kept on it, so an enqueue does not hash them."""
    scripts: Scripts | None = client.__dict__.get(_ATTRIBUTE)
    if scripts is None:
        scripts = Scripts(**{name: client.register_script(source) for name, source in SOURCES.items()})
        client.__dict__[_ATTRIBUTE] = scripts
    return scripts
