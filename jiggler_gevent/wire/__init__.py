"""Payload formats: how payloads are read from and written to Redis, by the layout of the keys in use.

The rest of the code knows one payload, the internal one (payload.py). A Wire turns raw payloads off Redis into it
(`decode`, `salvage`; `read` and `read_work` for readers such as the admin side, which show what they cannot run)
and back (`encode`), and says what a process's heartbeat holds (`process_fields`, `work_entry`). `Wire` itself is
jiggler's own format, where internal and wire payloads are the same; Sidekiq's (`wire="sidekiq"`) is in
wire/sidekiq.py. `of(keys)` picks the one that goes with a key layout.

A format may leave a job's options to the job (Sidekiq's `retry: true`): it reads them from the registry that
job.py hands over with `use_registry` when it is imported. The wire imports neither job.py nor client.py: they sit
above it.
"""

import json
from collections.abc import Callable
from typing import Any, Protocol

from .. import payload as payload_mod
from ..keys import Keys


class JobDefaults(Protocol):
    """What a format may read of a registered job: its own options."""

    @property
    def retries(self) -> int: ...

    @property
    def timeout(self) -> float | None: ...


Registry = Callable[[str], JobDefaults | None]


def _nothing_registered(name: str) -> JobDefaults | None:
    return None


_registry: Registry = _nothing_registered


def use_registry(find: Registry) -> None:
    """Where the formats find a registered job's options by wire name (job.py calls it once, on import)."""
    global _registry
    _registry = find


def registered(name: str) -> JobDefaults | None:
    """The options of the job registered under wire name `name`, or None (also while no job module is loaded)."""
    return _registry(name)


class Wire:
    """jiggler's own format: payloads as payload.py builds them, the heartbeat as one JSON `info` field."""

    name = "jiggler"

    # The internal payload of a raw one; PayloadError says what is wrong with it. payload.decode itself: one
    # call less per job.
    decode: Callable[[str], dict[str, Any]] = staticmethod(payload_mod.decode)

    def encode(self, payload: dict[str, Any]) -> str:
        """The raw form of an internal payload."""
        return payload_mod.encode(payload)

    def salvage(self, raw: str, error: str) -> dict[str, Any]:
        """The internal dead-set entry of a payload that cannot run (with `name` when it has one)."""
        return payload_mod.salvage(raw, error)

    def unwrap(self, parsed: dict[str, Any]) -> dict[str, Any]:
        """The internal payload of a parsed one, not checked (`parsed` may be consumed)."""
        return parsed

    def read(self, raw: str) -> dict[str, Any]:
        """A stored payload in the internal form, for showing and handling it, not for running it: not checked and
        never an error. Not JSON: {"raw", "error_class", "error_message"}; JSON but not an object: {"raw"}."""
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return {"raw": raw, "error_class": "PayloadError", "error_message": "payload is not valid JSON"}
        return self.unwrap(parsed) if isinstance(parsed, dict) else {"raw": raw}

    def read_work(self, text: str) -> dict[str, Any]:
        """A running job as a work hash shows it (queue, payload in the internal form, run_at); {} when damaged."""
        try:
            entry = json.loads(text)
        except (ValueError, RecursionError):
            return {}
        if not isinstance(entry, dict):
            return {}
        payload = entry.get("payload")
        if isinstance(payload, str):  # Sidekiq's own processes and ours in its format write the job as a string
            entry["payload"] = self.read(payload)
        elif isinstance(payload, dict):
            entry["payload"] = self.unwrap(payload)
        return entry

    def marker(self, jid: str) -> str:
        """Text that every stored payload of job `jid` contains (compact JSON, as both formats are written): what a
        search through raw payloads looks for before reading them."""
        return f'"jid":{payload_mod.encode(jid)}'

    def process_fields(self, record: dict[str, Any]) -> dict[str, str]:
        """The fields of a process's heartbeat hash, from its record (info, busy, beat, quiet, rss in bytes)."""
        return {"info": json.dumps(record)}

    def work_entry(self, queue: Any, payload: dict[str, Any], run_at: float) -> dict[str, Any]:
        """A running job as its process's work hash shows it (JSON-encoded by the caller)."""
        return {"queue": queue, "payload": payload, "run_at": run_at}


JIGGLER = Wire()


def of(keys: Keys) -> Wire:
    """The format that goes with a key layout."""
    if keys.wire == "sidekiq":
        from .sidekiq import SIDEKIQ

        return SIDEKIQ
    return JIGGLER
