"""Jobs for tests/test_async_jobs.py (workers load them with `-r tests.coroutine_jobs`): `async def` jobs, and
blocking ones to run beside them.

Each job records what it saw in Redis lists under the `key` it is given. Async jobs talk to Redis through
redis.asyncio (real async I/O on the worker's loop); blocking ones through the ordinary client.
"""

import asyncio
import time
from typing import Any

import redis.asyncio

from jiggler_gevent import config, job, progress
from tests.jobs import _hold_gil, cpu_hog

BARRIER_WAIT = 30.0  # how long a job waits for the others to reach the barrier before it records "alone"


def _redis() -> Any:
    return config.redis_client()


def _aredis() -> Any:
    return redis.asyncio.Redis.from_url(config.current().url, decode_responses=True)


async def _barrier(client: Any, key: str, parties: int) -> str:
    """Count this job in at `key`, then wait (awaiting) until `parties` jobs have: "met", or "alone" past the wait."""
    await client.incr(key + ":count")
    deadline = time.monotonic() + BARRIER_WAIT
    while time.monotonic() < deadline:
        if int(await client.get(key + ":count")) >= parties:
            return "met"
        await asyncio.sleep(0.01)
    return "alone"


async def _until_open(client: Any, key: str) -> None:
    """Await until `key:open` is set (at most BARRIER_WAIT seconds)."""
    deadline = time.monotonic() + BARRIER_WAIT
    while not await client.exists(key + ":open") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@job(retries=0)
async def meet(key: str, parties: int) -> None:
    """An async job that waits at a barrier with `parties` jobs, then records whether they all got there."""
    async with _aredis() as client:
        await client.rpush(key, "async:" + await _barrier(client, key, parties))


@job(retries=0)
def meet_blocking(key: str, parties: int) -> None:
    """A blocking job (time.sleep, the ordinary client) at the same barrier as `meet`."""
    client = _redis()
    client.incr(key + ":count")
    deadline = time.monotonic() + BARRIER_WAIT
    seen = "alone"
    while time.monotonic() < deadline:
        if int(client.get(key + ":count")) >= parties:
            seen = "met"
            break
        time.sleep(0.01)
    client.rpush(key, "blocking:" + seen)


@job(retries=0)
def meet_in_asyncio_run(key: str, parties: int) -> None:
    """A blocking job whose body is `asyncio.run()` of its own coroutine, at the same barrier as `meet`."""

    async def inside() -> str:
        async with _aredis() as client:
            seen = await _barrier(client, key, parties)
            return seen if asyncio.get_running_loop() is own_loop[0] else "another loop"

    own_loop: list[Any] = []

    async def main() -> str:
        own_loop.append(asyncio.get_running_loop())
        return await inside()

    _redis().rpush(key, "asyncio.run:" + asyncio.run(main()))


@job(retries=0)
async def wait_open(key: str) -> None:
    """Counts itself in at `key`, awaits until `key:open` is set, then records "done"."""
    async with _aredis() as client:
        await client.incr(key + ":count")
        await _until_open(client, key)
        await client.rpush(key, "done")


@job(retries=0)
async def halfway(key: str) -> None:
    """Reports progress 0.5 ("half"), then awaits until `key:open` is set (its job's context reaches the task)."""
    progress(0.5, "half")
    async with _aredis() as client:
        await _until_open(client, key)
        await client.rpush(key, "done")


@job(retries=0)
async def upset_the_loop(how: str) -> None:
    """Raises SystemExit (which asyncio lets out of its loop), or stops the loop it runs on."""
    if how == "exit":
        raise SystemExit(3)
    asyncio.get_running_loop().stop()


async def _wait_for_cancel(key: str) -> None:
    async with _aredis() as client:
        try:
            await client.rpush(key, "start")
            await asyncio.sleep(60)
            await client.rpush(key, "not cancelled")
        except asyncio.CancelledError:
            await client.rpush(key, "CancelledError")
            raise


@job(timeout=0.5, retries=0)
async def overstay(key: str) -> None:
    """Awaits far past its timeout; records the CancelledError it gets."""
    await _wait_for_cancel(key)


@job(result_ttl=60, retries=0)
async def wait_for_cancel(key: str) -> None:
    """Awaits until cancelled; records the CancelledError it gets."""
    await _wait_for_cancel(key)


@job(retries=1)
async def fail_once(key: str) -> str:
    """Fails its first run (ValueError), succeeds the next."""
    async with _aredis() as client:
        runs = await client.incr(key)
    if runs == 1:
        raise ValueError("the first run fails")
    return "ok"


@job(result_ttl=60)
async def add(a: int, b: int) -> int:
    """Awaits, then returns a + b (kept as the job's result)."""
    await asyncio.sleep(0.01)
    return a + b


@job(result_ttl=60, retries=0)
async def ping_over_a_socket(host: str, port: int) -> str:
    """PING the Redis at host:port through asyncio.open_connection, speaking RESP itself."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


@job(retries=0)
async def burn(key: str, seconds: float) -> None:
    """Computes for `seconds` without awaiting (tests.jobs.cpu_hog's body): holds the loop, never the hub for long
    (pre-emption)."""
    cpu_hog.func(key, seconds)


@job(retries=0, concurrency=1)
async def one_at_a_time(key: str) -> None:
    """An async job limited to one running at once across every worker: counts itself in while it awaits, and
    records "overlap" if another was counted in meanwhile."""
    async with _aredis() as client:
        if await client.incr(key + ":running") > 1:
            await client.rpush(key, "overlap")
        await asyncio.sleep(0.1)
        await client.decr(key + ":running")
        await client.rpush(key, "done")


@job(retries=0)
async def hold_the_gil(key: str, seconds: float) -> None:
    """Hold the GIL in one C call for about `seconds` from the coroutine (no forced yield can cut it short), then
    record "done" under `key`."""
    await asyncio.sleep(0)  # the loop runs the rest from its own greenlet
    _hold_gil(seconds)
    _redis().rpush(key, "done")
