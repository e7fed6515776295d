"""RedisSignals: signals sent to this process through Redis, as Sidekiq's Web UI and API send them (wire="sidekiq":
Quiet and Stop push TSTP or TERM onto the process's signal list). One is popped with each heartbeat and handed to
`on_signal` (the Launcher acts on TSTP and TERM). A layout without such lists (the jiggler wire) pops nothing.
"""

import logging
from collections.abc import Callable
from typing import Any

from ..keys import Keys
from .heartbeat import BeatPart

log = logging.getLogger("jiggler_gevent.monitor")  # the name of the heartbeat's lines, which this line was


class RedisSignals(BeatPart):
    """Pops one signal a beat from this process's list, and hands it over."""

    def __init__(self, keys: Keys, identity: str, on_signal: Callable[[str], None]) -> None:
        self.key = keys.signals(identity)
        self.on_signal = on_signal

    def queue(self, pipe: Any) -> None:
        if self.key is not None:
            pipe.rpop(self.key)

    def written(self, replies: list[Any]) -> None:
        if replies and replies[0]:
            log.info("signal %s received through Redis", replies[0])
            self.on_signal(str(replies[0]))
