"""The Redis ACL rule of a user limited to one namespace: the commands jiggler_gevent sends, and nothing else.

Redis checks the commands a Lua script calls against the ACL too, so the rule is the commands the code sends
itself (DIRECT, by who sends them) and every command the scripts call, read from their sources
(scripts.SOURCES): a new script, or a new command in one, is in the rule without anyone listing it. The README's
rule is `rule("jiggler")`; tests/test_security.py checks that, runs every path (worker, recovery, limiters,
results, cancellation, batches, every `gjiggler` command and dashboard page) as a user with the rule, and fails on
any refusal or on a command Redis counted that the rule leaves out.

    python -c 'from jiggler_gevent import acl; print(acl.rule("myapp"))'

For the default wire (`wire="jiggler"`) on one server or Redis Sentinel; Sidekiq's wire writes keys outside the
namespace, and a Redis Cluster client needs CLUSTER commands besides.
"""

import re

from . import scripts

DIRECT: dict[str, tuple[str, ...]] = {
    "connection": ("ping", "hello", "auth", "select", "info"),
    "scripts and pipelines": ("evalsha", "script|load", "script|exists", "multi", "exec", "discard"),
    "fetching and waiting": ("blmove", "bzpopmin", "blpop", "lrange", "zadd", "wait"),
    "heartbeat and counters": ("sadd", "srem", "hset", "pexpire", "expire", "expireat", "del", "incrby", "hincrby"),
    "periodic table": ("set",),
    "cancellation": ("subscribe", "unsubscribe", "zrangebyscore"),
    "reading state (api, gjiggler, dashboard)": (
        *("smembers", "scard", "sismember", "llen", "lindex", "lrem", "zcard", "zcount", "zrange", "zrevrange"),
        *("zscore", "zscan", "zrem", "hget", "hgetall", "hmget", "get", "mget", "exists", "type", "time"),
    ),
}

_CALL = re.compile(r"redis\.p?call\(")
_LITERAL = re.compile(r"""redis\.p?call\(\s*'([A-Za-z]+)'""")


def script_commands() -> set[str]:
    """Every command the Lua scripts call (lower case). ValueError when a script names a command other than by a
    literal, which this could not read."""
    found: set[str] = set()
    for name, source in scripts.SOURCES.items():
        literal = _LITERAL.findall(source)
        if len(literal) != len(_CALL.findall(source)):
            raise ValueError(f"script {name} calls a command it does not name literally")
        found.update(c.lower() for c in literal)
    return found


def commands() -> list[str]:
    """The commands of the rule, sorted: DIRECT and the scripts' own."""
    return sorted({c for group in DIRECT.values() for c in group} | script_commands())


def rule(namespace: str) -> str:
    """The ACL rule (what follows `ACL SETUSER name on >password`) for a user of namespace `namespace` only."""
    grants = " ".join(f"+{c}" for c in commands())
    return f"resetkeys ~{namespace}:* resetchannels &{namespace}:* -@all {grants}"
