"""Ordinary blocking code as jobs: nothing here knows about gevent.

The worker patches the standard library (and psycopg2, through psycogreen) before it imports this
module, so each job below waits on its peer without holding up the others: one process runs as many of
them at once as its --concurrency. psycopg 3 needs nothing more: imported after the patch, it waits with the
patched `select`, and psycopg_pool's threads, locks and conditions are greenlets and gevent's.

    gjiggler worker -r examples.legacy_jobs -c 100

and, from anywhere that can reach the same Redis:

    from examples.legacy_jobs import fetch_url
    fetch_url.enqueue("http://127.0.0.1:8000/slow")
"""

import atexit
import hashlib
import smtplib
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Sequence
from contextlib import closing
from email.message import EmailMessage
from typing import Any

import psycopg
import psycopg2
import requests
from psycopg_pool import ConnectionPool

from jiggler_gevent import job


@job
def run_sql(dsn: str, sql: str, params: list[Any] | None = None) -> None:
    """Run one statement on PostgreSQL with psycopg2 and commit it. One connection per job, closed after."""
    with closing(psycopg2.connect(dsn)) as conn:
        with conn, conn.cursor() as cursor:  # `with conn` commits, or rolls back on an exception
            cursor.execute(sql, params)


@job
def run_sql_psycopg3(dsn: str, sql: str, params: list[Any] | None = None) -> None:
    """Run one statement on PostgreSQL with psycopg 3 and commit it. One connection per job, closed after."""
    with psycopg.connect(dsn) as conn:  # leaving the block commits (rolls back on an exception) and closes
        conn.execute(sql, params)


POOL_SIZE = 10
_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def pool_for(dsn: str) -> ConnectionPool:
    """This process's psycopg_pool of POOL_SIZE connections to `dsn`: opened on first use, closed at exit."""
    with _pools_lock:
        pool = _pools.get(dsn)
        if pool is None:
            pool = _pools[dsn] = ConnectionPool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, open=True)
            atexit.register(pool.close)
    return pool


@job
def run_sql_pooled(dsn: str, sql: str, params: list[Any] | None = None) -> None:
    """Run one statement with psycopg 3 on a connection borrowed from the pool: more jobs than POOL_SIZE
    wait their turn for a connection (cooperatively) instead of opening one each."""
    with pool_for(dsn).connection() as conn:  # commits (or rolls back) and gives the connection back
        conn.execute(sql, params)


@job(retries=5)
def fetch_url(url: str, timeout: float = 10.0) -> int:
    """GET `url` with requests; an HTTP error status fails the job (and it is retried)."""
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    return len(response.content)


@job(retries=5)
def fetch_url_stdlib(url: str, timeout: float = 10.0) -> int:
    """GET `url` with urllib from the standard library."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return len(response.read())


@job(queue="default", retries=10)
def send_email(host: str, port: int, sender: str, recipient: str, subject: str, body: str) -> None:
    """Send one message with smtplib."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, subject
    message.set_content(body)
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.send_message(message)


@job
def run_command(argv: Sequence[str], output_path: str, timeout: float = 60.0) -> None:
    """Run a program with subprocess and write what it printed to `output_path` (file I/O)."""
    result = subprocess.run(list(argv), capture_output=True, check=True, timeout=timeout)
    with open(output_path, "wb") as out:
        out.write(result.stdout)


@job
def send_line(host: str, port: int, line: str, timeout: float = 10.0) -> str:
    """Send one line over a plain TCP socket and wait for the one-line answer; anything but OK fails."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        answer = sock.makefile("rb").readline().decode().strip()
    if answer != "OK":
        raise ConnectionError(f"{host}:{port} answered {answer!r} to {line!r}")
    return answer


@job
def checksum_file(path: str, digest_path: str) -> None:
    """Read a file in chunks and write its SHA-256 next to it (plain file I/O)."""
    sha = hashlib.sha256()
    with open(path, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 16), b""):
            sha.update(chunk)
    with open(digest_path, "w") as out:
        out.write(sha.hexdigest())
