"""`gjiggler demo`, README's first command: on a machine where no Redis answers and none is installed it starts the
embedded Valkey of the [dev] extra, says so, runs the example jobs and removes the server at exit.

"A machine with nothing" is a fresh network namespace (nothing listens on its loopback, so localhost:6379 does not
answer) and a PATH with only the virtualenv's bin directory (no redis-server).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jiggler_gevent.demo.local_redis import free_port
from tests.conftest import ROOT
from tests.netns import ip, require_ip


@pytest.fixture
def empty_netns() -> Iterator[str]:
    """A network namespace with only its loopback up: no server answers in it."""
    require_ip()
    name = f"jgdemo{os.getpid()}{uuid.uuid4().hex[:4]}"
    ip("netns", "add", name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        yield name
    finally:
        ip("netns", "delete", name, check=False)


def bare_env() -> dict[str, str]:
    """No Redis variables, and a PATH on which no redis-server can be found."""
    return {"PATH": str(Path(sys.executable).parent), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


def test_demo_starts_the_embedded_valkey_when_nothing_answers_and_removes_it(empty_netns):
    # a temporary folder of its own: the tests beside it make and remove jiggler-redis-* folders in /tmp meanwhile
    tmp = Path(tempfile.mkdtemp(prefix="jd-"))
    proc = subprocess.Popen(
        [shutil.which("ip") or "ip", "netns", "exec", empty_netns, sys.executable, "-m", "jiggler_gevent", "demo"],
        cwd=ROOT,
        env={**bare_env(), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    made: set[str] = set()  # what the demo made in its temporary folder while it ran
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        made |= {p.name.rsplit("-", 1)[0] for p in tmp.iterdir()}
        time.sleep(0.01)
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, out
    assert "No Redis answers at redis://localhost:6379/0: started Valkey 9." in out
    assert "processed 40, failed 1" in out
    assert "stopped and removed Valkey 9." in out
    left = sorted(p.name for p in tmp.iterdir())
    shutil.rmtree(tmp)
    assert made == {"jiggler-redis", "jiggler-demo"}, made
    assert left == []  # the server's directory and the demo's own are gone


def test_demo_given_a_url_that_does_not_answer_says_so_and_starts_nothing():
    url = f"redis://127.0.0.1:{free_port()}/0"
    run = subprocess.run(
        [sys.executable, "-m", "jiggler_gevent", "demo", "--redis-url", url],
        cwd=ROOT,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == f"gjiggler demo: no Redis answers at {url}"
    assert "started" not in run.stdout
