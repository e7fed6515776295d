"""A job module that raises while it is imported (tests/test_supervisor.py: -r of it must stop a worker, -p N too,
showing the error once)."""

from jiggler_gevent import job


@job
def never(key: str) -> None:
    """Never runs: the module fails before a worker can start."""


def _load_settings() -> None:
    raise RuntimeError("settings file missing: raised on purpose at import")


_load_settings()
