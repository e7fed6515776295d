"""Grouped jobs the group tests enqueue and their workers run (`-r tests.group_jobs`): kept apart from tests.jobs, since
a worker with a `group_concurrency` job registered sends the fetch script's extra part on every fetch."""

import time

from jiggler_gevent import config, job


def _redis():
    return config.redis_client()


@job(group_by=lambda key, tenant, seconds: tenant, group_concurrency=1)
def tenant_nap(key: str, tenant: str, seconds: float) -> None:
    """Record its start and end (one list, in the order Redis saw them) around a sleep; one run per tenant at once."""
    _redis().rpush(key, f"start {tenant}")
    time.sleep(seconds)
    _redis().rpush(key, f"end {tenant}")


@job(group_by=lambda key, tenant, value: tenant)
def tenant_record(key: str, tenant: str, value: str) -> None:
    """RPUSH `tenant:value` to the list `key`: the order the tenants' jobs started."""
    _redis().rpush(key, f"{tenant}:{value}")


@job(group_by=lambda key, tenant, value: tenant)
def tenant_spawn(key: str, tenant: str, value: str) -> None:
    """Record `tenant:value` as tenant_record does, then enqueue a job of the group "new"."""
    tenant_record.func(key, tenant, value)
    tenant_record.enqueue(key, "new", value)


@job(group_by=lambda key, tenant: tenant, group_concurrency=1)
def tenant_wait(key: str, tenant: str) -> None:
    """Record "started", then wait until `key:open` is set (at most 60 s)."""
    _redis().rpush(key, "started")
    deadline = time.monotonic() + 60
    while not _redis().exists(key + ":open") and time.monotonic() < deadline:
        time.sleep(0.05)


@job(group_by=lambda key, tenant: tenant, group_concurrency=2)
def tenant_wait_two(key: str, tenant: str) -> None:
    """tenant_wait with two runs of a tenant at once (each run given its own `key`)."""
    tenant_wait.func(key, tenant)
