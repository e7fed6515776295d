"""`push(...)`: enqueue a job for a Ruby Sidekiq worker class, whatever wire this process is configured with.

The format itself (payloads, heartbeats, backtraces) is in wire/sidekiq.py; this module is the public client verb.
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import config
from . import payload as payload_mod
from .client import Cached
from .wire.sidekiq import retries as sidekiq_retries


def _sidekiq_wire(cfg: config.Config) -> config.Config:
    """`cfg` with Sidekiq's payload format and key layout."""
    return replace(cfg, extra={**cfg.extra, "wire": "sidekiq"})


_client = Cached(_sidekiq_wire).get  # push's Client: the settings in force, on Sidekiq's wire


def push(
    class_name: str,
    args: Sequence[Any] = (),
    *,
    queue: str = config.DEFAULT_QUEUE,
    retry: bool | int = True,
    at: float | None = None,
    jid: str | None = None,
) -> str:
    """Enqueue a job for a Ruby Sidekiq worker class (`Sidekiq::Job`) on the configured Redis; returns its jid.

    The payload and keys are Sidekiq's whatever `configure(wire=...)` says (a namespace other than the default puts
    the keys under it, as redis-namespace would). `at` (unix seconds) schedules it; `retry` is Sidekiq's option.
    """
    retries = sidekiq_retries(retry, None) if retry is not True else config.DEFAULT_RETRIES
    payload = payload_mod.build(class_name, args, queue=queue, retries=retries, dead=retry is not False)
    if jid is not None:
        payload["jid"] = jid
    client = _client()
    pushed = client.schedule(payload, at) if at is not None else client.push(payload)
    assert pushed is not None  # only unique jobs are ever skipped
    return pushed
