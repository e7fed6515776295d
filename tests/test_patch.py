"""patch.py in a fresh interpreter: gevent first, psycopg2 made cooperative when (and only when) it is imported."""

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
from jiggler_gevent.patch import patch
patch()
import socket, gevent.socket
assert socket.socket is gevent.socket.socket, "socket not patched"
print("loaded before import:", "psycopg2" in sys.modules)
{body}
"""


def run(body: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_psycopg2_is_not_loaded_until_something_imports_it_and_is_then_cooperative():
    out = run(
        "from psycopg2 import extensions\n"
        "from psycogreen.gevent import gevent_wait_callback\n"
        "print('patched:', extensions.get_wait_callback() is gevent_wait_callback)"
    )
    assert out.splitlines() == ["loaded before import: False", "patched: True"]


def test_importing_a_submodule_first_patches_too():
    out = run("import psycopg2.extras\nprint('patched:', psycopg2.extensions.get_wait_callback() is not None)")
    assert out.splitlines()[-1] == "patched: True"
