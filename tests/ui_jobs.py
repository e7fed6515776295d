"""Jobs for tests/test_cli_results.py and tests/test_web_results.py (`-r tests.ui_jobs`): tracked jobs that end
done or dead, and batch members that succeed or fail at once (no retry), so a batch completes quickly."""

import pytest

from jiggler_gevent import api, job


@job(result_ttl=600)
def add(a: int, b: int) -> int:
    return a + b


@job(result_ttl=600, retries=0)
def explode(message: str) -> None:
    raise ValueError(message)


@job(retries=0)
def step(ok: bool) -> None:
    """A batch member: succeeds when `ok`, else fails for good."""
    if not ok:
        raise RuntimeError("planned step failure")


def run_done_and_dead(start_worker) -> tuple[str, str]:
    """A tracked job that ends done (2 + 3) and one that ends dead, run by a real worker that is then stopped."""
    done = add.enqueue(2, 3)
    dead = explode.enqueue("bad <b>input</b>")
    worker = start_worker("-r", "tests.ui_jobs")
    assert api.Job(done).result(timeout=60) == 5
    with pytest.raises(api.JobFailed):
        api.Job(dead).result(timeout=60)
    assert worker.stop() == 0
    return done, dead
