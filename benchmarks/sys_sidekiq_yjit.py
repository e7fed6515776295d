"""Sidekiq with YJIT (`RUBYOPT=--yjit`, worker and enqueuer): otherwise the same as sys_sidekiq.py."""

from collections.abc import Sequence

from benchmarks import common
from benchmarks.sys_sidekiq import BULK, MULTI_PROCESS, sidekiq_command, unavailable, version
from benchmarks.sys_sidekiq import enqueuer as _enqueuer

__all__ = ["BULK", "MULTI_PROCESS", "command", "enqueuer", "unavailable", "version"]


def command(concurrency: int, processes: int, queues: Sequence[str] = (common.QUEUE,)) -> list[str]:
    """The worker's command line."""
    return sidekiq_command(concurrency, processes, queues, yjit=True)


def enqueuer(args: Sequence[str]) -> list[str]:
    """The enqueuer's command line."""
    return _enqueuer(args, yjit=True)
