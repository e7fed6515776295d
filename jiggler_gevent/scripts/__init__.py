"""The Lua scripts jiggler_gevent runs in Redis: one file each beside this module, read once.

Each script is atomic: no other client sees it half done. Every check-and-take across processes is one of
them. Every key a script touches is passed in KEYS or, where the number of queues varies, built from the
queue key prefix in ARGV; the header of each file names its KEYS and ARGV. Key names come from keys.py.
"""

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import hiredis
import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline
from redis.commands import core
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

# A line `--#include NAME` is replaced by the text of NAME.lua (shared Lua functions), once per script: a library
# that two others include is read at its first include only (so it must come where both can see it).
INCLUDE = "--#include "


def _source(name: str, included: set[str] | None = None) -> str:
    included = set() if included is None else included
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    parts = []
    for line in text.splitlines(keepends=True):
        if not line.startswith(INCLUDE):
            parts.append(line)
            continue
        library = line[len(INCLUDE) :].strip()
        if library not in included:
            included.add(library)
            parts.append(_source(library, included))
    return "".join(parts)


SOURCES = {
    name: _source(name)
    for name in (
        *("push", "fetch", "settle", "adopt", "move_due", "move_one", "cron_lease", "cron_fire"),
        *("push_each", "unique_release", "concurrent_acquire", "concurrent_release"),
        *("window_acquire", "bucket_acquire", "cancel", "job_max", "release_holds"),
        *("workflow_push", "workflow_cancel", "debounce"),
    )
}
SHAS = {name: hashlib.sha1(source.encode("utf-8")).hexdigest() for name, source in SOURCES.items()}
_ATTRIBUTE = "_jiggler_gevent_scripts"


CLIENT, PIPELINE, CLUSTER_PIPELINE = "client", "pipeline", "cluster pipeline"  # what a script is called on


def _kind(target: object) -> str:
    """Which of CLIENT, PIPELINE or CLUSTER_PIPELINE `target` is."""
    if isinstance(target, ClusterPipeline):
        return CLUSTER_PIPELINE
    return PIPELINE if isinstance(target, Pipeline) else CLIENT


# Per class, since redis-py's clients are typing Protocols, whose isinstance checks run Python code each time.
_KINDS: dict[type, str] = {}


def answer(read: Callable[[], object]) -> object:
    """A reply, or the error Redis answered instead (returned, so that the replies after it are still read)."""
    try:
        return read()
    except redis.exceptions.ResponseError as exc:
        return exc


# hiredis' stub types its argument as a tuple of one element
_PACK = cast("Callable[[tuple[EncodableT, ...]], bytes]", hiredis.pack_command)


def packed(conn: Any, commands: Sequence[tuple[EncodableT, ...]]) -> list[bytes]:
    """`commands` in Redis' protocol, packed by hiredis in C (redis-py's packing runs Python per argument: a settle of
    ten tracked jobs has over a hundred); by redis-py's encoder when a text holds a lone surrogate, which it writes
    back as it was read (surrogateescape)."""
    try:
        return [b"".join(map(_PACK, commands))]
    except UnicodeEncodeError:
        packed_commands: list[bytes] = conn.pack_commands(commands)
        return packed_commands


def pipelined(conn: Any, commands: Sequence[tuple[EncodableT, ...]]) -> list[object]:
    """Send `commands` in one write on `conn` (a redis-py Connection, whose methods are untyped) and read their
    replies (or the errors Redis answered)."""
    try:
        conn.send_packed_command(packed(conn, commands))
        return [answer(conn.read_response) for _ in commands]
    except BaseException:
        conn.disconnect()  # a reply may be left unread on it
        raise


def evalsha(script: core.Script, keys: Sequence[str], args: Sequence[EncodableT]) -> tuple[EncodableT, ...]:
    """The EVALSHA command that runs `script`."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


class Script(core.Script):
    """One script bound to a client: a call is EVALSHA straight on the client, and loads the script on NOSCRIPT.

    redis-py's own `Script.__call__` imports two modules and runs a typing-Protocol isinstance check per call; this
    does neither. On a single-connection client (client.py keeps one per pool for pushes) the command is packed by
    hiredis and sent straight on its connection, without redis-py's per-argument encoding and command dispatch. A
    redis-py pipeline still gets what it expects: the script is added to `pipe.scripts`, which it loads at `execute()`
    if the server lacks it; a Cluster pipeline only queues EVALSHA, as redis-py's does.
    """

    def __init__(self, client: "redis.Redis", source: str, sha: str) -> None:
        # Not core.Script.__init__: it would hash the source again for every client.
        self.registered_client = client
        self.script = source
        self.sha = sha

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        """Run the script with `keys` and `args` on `client` (default: the client it is bound to)."""
        keys = keys or ()
        argv = (*keys, *(args or ()))
        target: Any = self.registered_client if client is None else client
        kind = _KINDS.get(type(target))
        if kind is None:
            kind = _KINDS[type(target)] = _kind(target)
        if kind is not CLIENT:
            if kind is PIPELINE:
                target.scripts.add(self)
            return target.evalsha(self.sha, len(keys), *argv)
        conn = getattr(target, "connection", None)  # set on a single-connection client only
        if conn is not None:
            return self._on_connection(conn, len(keys), argv)
        try:
            return target.evalsha(self.sha, len(keys), *argv)
        except NoScriptError:  # the server restarted or flushed its scripts, or is another node
            self.sha = target.script_load(self.script)
            return target.evalsha(self.sha, len(keys), *argv)

    def _on_connection(self, conn: Any, numkeys: int, argv: tuple[Any, ...]) -> Any:
        """EVALSHA on one connection, whose caller holds it, retried as redis-py retries a command (the connection's
        `retry`: across a failover too); loads the script on NOSCRIPT and runs it again."""
        return conn.retry.call_with_retry(lambda: self._once(conn, numkeys, argv), lambda _error: conn.disconnect())

    def _once(self, conn: Any, numkeys: int, argv: tuple[Any, ...]) -> Any:
        (reply,) = pipelined(conn, [("EVALSHA", self.sha, numkeys, *argv)])
        if isinstance(reply, NoScriptError):
            (sha,) = pipelined(conn, [("SCRIPT", "LOAD", self.script)])
            if isinstance(sha, Exception):
                raise sha
            self.sha = sha.decode() if isinstance(sha, bytes) else str(sha)
            (reply,) = pipelined(conn, [("EVALSHA", self.sha, numkeys, *argv)])
        if isinstance(reply, Exception):
            raise reply
        return reply


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
    workflow_push: Script
    workflow_cancel: Script
    debounce: Script


def register(client: "redis.Redis") -> Scripts:
    """The scripts bound to `client`: made once per client and kept on it, so an enqueue does not hash them."""
    scripts: Scripts | None = client.__dict__.get(_ATTRIBUTE)
    if scripts is None:
        scripts = Scripts(**{name: Script(client, source, SHAS[name]) for name, source in SOURCES.items()})
        client.__dict__[_ATTRIBUTE] = scripts
    return scripts
