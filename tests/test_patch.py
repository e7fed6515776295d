"""patch.py in a fresh interpreter: gevent first, psycopg2 made cooperative when (and only when) it is imported;
psycopg 3 and psycopg_pool, imported after the patch, cooperative with nothing more."""

import json
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


PSYCOPG3 = """
import json, threading, time
import gevent
print("psycopg 3 loaded by the patch:", "psycopg" in sys.modules)
import psycopg
from psycopg import waiting
from psycopg_pool import ConnectionPool

DSN = {dsn!r}
found = {{"wait": waiting.wait.__name__, "selector": waiting.DefaultSelector.__module__}}
ticks = []

def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.02)

def timed(target, n):
    start = time.monotonic()
    gevent.joinall([gevent.spawn(target) for _ in range(n)], raise_error=True)
    return time.monotonic() - start

def own_connection():
    with psycopg.connect(DSN) as conn:
        conn.execute("SELECT pg_sleep(1.0)")

threads_before = threading.active_count()
tick = gevent.spawn(ticker)
found["plain"] = timed(own_connection, 10)
pool = ConnectionPool(DSN, min_size=10, max_size=10, open=True)
pool.wait(10)
found["pool_threads"] = threading.active_count() - threads_before

def pooled():
    with pool.connection() as conn:
        conn.execute("SELECT pg_sleep(1.0)")

found["pool"] = timed(pooled, 10)
found["pool_20_on_10"] = timed(pooled, 20)
found["connections"] = pool.get_stats()["connections_num"]
start = time.monotonic()
pool.close(timeout=5)
found["close"] = time.monotonic() - start
found["closed"] = pool.closed
found["threads_left"] = threading.active_count() - threads_before
tick.kill()
found["worst_tick_gap"] = max(b - a for a, b in zip(ticks, ticks[1:]))
print(json.dumps(found))
"""


def test_psycopg3_and_psycopg_pool_imported_after_the_patch_wait_cooperatively(pg_admin_dsn):
    out = run(PSYCOPG3.format(dsn=pg_admin_dsn)).splitlines()
    assert out[:2] == ["loaded before import: False", "psycopg 3 loaded by the patch: False"]
    found = json.loads(out[-1])
    # psycopg 3 picks its wait function when it is imported: after the patch, one on the patched select
    assert found["wait"] != "wait_c" and found["selector"].startswith("gevent"), found
    # 10 greenlets, each pg_sleep(1.0) on a connection of its own, then on a shared pool of 10 (10 s serially)
    assert found["plain"] < 5.0 and found["pool"] < 5.0, found
    # 20 on 10 connections: two rounds, 2 s (20 s serially)
    assert found["pool_20_on_10"] < 8.0 and found["connections"] == 10, "20 greenlets wait for 10 connections"
    # a query that held the hub would stop the 20 ms ticker for its whole second; the bound leaves room for a
    # loaded machine (0.4 s against 0.5 s queries left it 0.1 s)
    assert found["worst_tick_gap"] < 0.8, "a query held the hub"
    # the pool's threads are greenlets; closing the pool stops them all and does not hang
    assert found["pool_threads"] >= 1 and found["threads_left"] == 0, found
    assert found["closed"] is True and found["close"] < 5.0, found


POLL = """
import select, socket
import gevent
a, b = socket.socketpair()
p = select.poll()
p.register(a, select.POLLIN)
ran = []
gevent.spawn(ran.append, 1)  # runs as soon as anything switches to the hub
print("nothing to read:", p.poll(0), ran)
b.send(b"x")
print("readable:", p.poll(0) == [(a.fileno(), select.POLLIN)], ran)
p.modify(a.fileno(), select.POLLOUT)
print("writable:", p.poll(0) == [(a.fileno(), select.POLLOUT)], ran)
p.unregister(a)
print("none registered:", p.poll(0), ran)
c, d = socket.socketpair()
p.register(c, select.POLLIN)
gevent.spawn_later(0.05, d.send, b"y")
print("waited cooperatively:", p.poll(2000) == [(c.fileno(), select.POLLIN)], ran)
"""


def test_poll_with_no_timeout_asks_the_os_without_yielding_and_a_timed_poll_still_waits_for_the_hub():
    assert run(POLL).splitlines()[1:] == [
        "nothing to read: [] []",
        "readable: True []",
        "writable: True []",
        "none registered: [] []",
        "waited cooperatively: True [1]",
    ]


SENDALL = """
import socket
import gevent
a, b = socket.socketpair()
ran = []
gevent.spawn(ran.append, 1)  # runs as soon as anything switches to the hub
a.sendall(b"small")
print("small sent without yielding:", b.recv(100) == b"small", ran)
big = bytes(range(256)) * 40_000  # 10 MB: far more than the socket buffers hold
got = bytearray()
def read():
    while len(got) < len(big):
        got.extend(b.recv(1 << 20))
reader = gevent.spawn(read)
a.sendall(big)
reader.join(10)
print("big sent whole, in order, cooperatively:", bytes(got) == big, ran)
a.sendall(memoryview(b"view"))
print("memoryview:", b.recv(100) == b"view")
c, d = socket.socketpair()
c.settimeout(0.2)
try:
    c.sendall(big)
    print("timeout: none")
except socket.timeout:
    print("timeout: raised")
"""


def test_sendall_sends_a_small_request_at_once_and_falls_back_to_gevents_for_the_rest():
    assert run(SENDALL).splitlines()[1:] == [
        "small sent without yielding: True []",
        "big sent whole, in order, cooperatively: True [1]",
        "memoryview: True",
        "timeout: raised",
    ]
