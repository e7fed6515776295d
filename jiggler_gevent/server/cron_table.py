"""CronTablePublisher: this process's periodic table, kept in NS:cron:table:<signature> for the admin side (`gjiggler
cron`, the Cron page). The processes with the same entries share the key: each heartbeat renews its TTL, and
writes the table again only when the key has gone.
"""

from typing import Any

from ..keys import Keys
from .cron import Table
from .heartbeat import BeatPart


class CronTablePublisher(BeatPart):
    """Keeps the table in Redis as long as the process beats."""

    def __init__(self, keys: Keys, table: Table, ttl: float) -> None:
        self.key, self.table = keys.cron_table(table.signature), table
        self.ttl_ms = int(ttl * 1000)
        self.published = False  # the table was there at the last beat: renewing its TTL is enough

    def queue(self, pipe: Any) -> None:
        if self.published:
            pipe.pexpire(self.key, self.ttl_ms)
        else:
            pipe.set(self.key, self.table.json, px=self.ttl_ms)

    def written(self, replies: list[Any]) -> None:
        self.published = bool(replies[-1])
