"""The test suite never sends a command to a Redis it was not given for tests.

A developer's $REDIS_URL (and $JIGGLER_REDIS_URL) often names a Redis that holds data. A part of the suite that
starts workers, enqueues and reads state is run here in a subprocess with both variables pointing at a server that
stands for that Redis; that server must see no connection at all.
"""

import os
import subprocess
import sys

from tests.conftest import ROOT

PART = ["tests/test_job.py", "tests/test_worker.py", "tests/test_api.py"]


def test_the_suite_ignores_redis_url_and_leaves_that_server_untouched(redis_server):
    users = redis_server()
    c = users.client()
    c.set("precious", "data")
    before = c.info("stats")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIGGLER_TEST_REDIS")}
    env.update(REDIS_URL=users.url, JIGGLER_REDIS_URL=users.url)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *PART],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
    after = c.info("stats")
    assert after["total_connections_received"] == before["total_connections_received"]
    # Only this test's own INFO reached the server in between.
    assert after["total_commands_processed"] - before["total_commands_processed"] == 1
    assert c.dbsize() == 1 and c.get("precious") == "data"
