"""Blocking libraries run concurrently on the pool: examples/legacy_jobs.py against real peers on loopback.

Each peer answers slowly on purpose (PostgreSQL's pg_sleep, an HTTP, SMTP or line server that waits
before it replies, a program that sleeps), so a batch that finishes well under its serial time proves
that the worker ran the jobs at the same time in one process, with unchanged blocking code.
"""

import contextlib
import hashlib
import os
import re
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from examples import legacy_jobs
from jiggler_gevent import api
from tests import jobs
from tests.conftest import wait_for
from tests.pg import PgDatabase, max_overlap

# ---------------------------------------------------------------------------------------------------------
# Peers: threaded servers in the test process, each answering after `delay` seconds and recording what it got.


class Recorder:
    """What a peer received, safe to read from the test thread."""

    def __init__(self) -> None:
        self._items: list[object] = []
        self._lock = threading.Lock()

    def add(self, item: object) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[object]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self.items())


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a batch connects at once; the default backlog of 5 would drop SYNs


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[tuple[str, int]]:
    """Run `server` in a thread; (host, port) while inside the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()


def http_peer(delay: float, hits: Recorder) -> _HTTPServer:
    """GET /status/N answers N; any other path answers 200. Every request is recorded."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            hits.add(self.path)
            status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
            body = b"hello from the slow peer\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return _HTTPServer(("127.0.0.1", 0), Handler)


def smtp_peer(delay: float, messages: Recorder) -> _Server:
    """Just enough SMTP for smtplib: the message is accepted `delay` seconds after its final dot."""

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.reply("220 localhost test SMTP")
            envelope: dict = {"rcpt": []}
            for raw in self.rfile:
                command = raw.decode().strip()
                verb = command.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 localhost")
                elif verb == "MAIL":
                    envelope["from"] = command
                    self.reply("250 OK")
                elif verb == "RCPT":
                    envelope["rcpt"].append(command)
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    lines = []
                    for data in self.rfile:
                        if data in (b".\r\n", b".\n"):
                            break
                        lines.append(data)
                    time.sleep(delay)
                    messages.add({**envelope, "data": b"".join(lines).decode()})
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    return _Server(("127.0.0.1", 0), Handler)


def line_peer(delay: float, lines: Recorder) -> _Server:
    """Reads one line, waits `delay`, answers OK."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode().strip()
            time.sleep(delay)
            lines.add(line)
            self.wfile.write(b"OK\n")

    return _Server(("127.0.0.1", 0), Handler)


# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def legacy_worker(start_worker: Callable, r) -> Callable[..., object]:
    """Start `gjiggler worker -r tests.jobs -r examples.legacy_jobs -c N [ARGS]` and wait until it runs a job."""

    def start(concurrency: int, *args: str):
        worker = start_worker("-r", "examples.legacy_jobs", "-c", str(concurrency), *args)
        key = f"up-{uuid.uuid4().hex[:8]}"
        jobs.record.enqueue(key, "up")
        wait_for(lambda: r.llen(key) or worker.proc.poll() is not None, 30, "the worker to run a first job")
        assert worker.proc.poll() is None, worker.output()
        return worker

    return start


def timed(predicate: Callable[[], object], timeout: float, message: str, start: float) -> float:
    """Wait for `predicate`; seconds since `start`."""
    wait_for(predicate, timeout, message)
    elapsed = time.monotonic() - start
    print(f"{message}: {elapsed:.2f}s")
    return elapsed


@pytest.fixture
def slept_table(pg_db: PgDatabase) -> Iterator[str]:
    """A table of the test's own in pg_db, for the pg_sleep jobs to write to; dropped after the test."""
    table = f"slept_{uuid.uuid4().hex[:8]}"
    pg_db.query(
        f"CREATE TABLE {table} (n int NOT NULL, backend int NOT NULL, "
        "started timestamptz NOT NULL, ended timestamptz NOT NULL)"
    )
    yield table
    pg_db.query(f"DROP TABLE IF EXISTS {table}")


def run_pg_sleep_jobs(job: Any, pg_db: PgDatabase, table: str, count: int, seconds: float) -> float:
    """Enqueue `count` jobs that each write a row after pg_sleep(seconds) in one statement; the seconds until
    all rows are in, once it is checked that each job wrote its row exactly once."""
    sql = (
        f"INSERT INTO {table} (n, backend, started, ended) "
        "SELECT %s, pg_backend_pid(), statement_timestamp(), clock_timestamp() FROM pg_sleep(%s)"
    )
    start = time.monotonic()
    job.enqueue_bulk([(pg_db.dsn, sql, [n, seconds]) for n in range(count)])
    written = lambda: pg_db.query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: E731
    elapsed = timed(lambda: written() >= count, 30, f"{count} pg_sleep({seconds}) jobs ({job.name})", start)
    rows = pg_db.query(f"SELECT n, count(*) FROM {table} GROUP BY n ORDER BY n")
    assert rows == [(n, 1) for n in range(count)], "each job's row is written exactly once"
    return elapsed


def overlap(pg_db: PgDatabase, table: str) -> int:
    """The most statements of `table`'s rows that were running inside PostgreSQL at the same moment."""
    most = max_overlap(pg_db.query(f"SELECT started, ended FROM {table}"))
    print(f"at most {most} of the statements ran at once")
    return most


# The PostgreSQL jobs run with --preempt 0: without forced switches, their queries overlap only if the driver
# waits cooperatively (a driver that blocks while calling back into Python now and then would otherwise be
# pre-empted into a partial overlap).


def test_psycopg2_pg_sleep_jobs_run_concurrently(ns, legacy_worker, pg_db, slept_table) -> None:
    worker = legacy_worker(50, "--preempt", "0")
    elapsed = run_pg_sleep_jobs(legacy_jobs.run_sql, pg_db, slept_table, 50, 0.5)
    assert elapsed < 5.0, f"50 x pg_sleep(0.5) took {elapsed:.2f}s with -c 50 (25 s serially)"
    assert overlap(pg_db, slept_table) >= 25, "the queries did not run at the same time"
    # every job opened and closed its own connection: none is left once the jobs are done
    wait_for(lambda: pg_db.connections() == 0, 10, "the jobs' connections to close")
    assert worker.stop() == 0


def test_psycopg3_pg_sleep_jobs_run_concurrently(ns, legacy_worker, pg_db, slept_table) -> None:
    worker = legacy_worker(50, "--preempt", "0")
    elapsed = run_pg_sleep_jobs(legacy_jobs.run_sql_psycopg3, pg_db, slept_table, 50, 0.5)
    assert elapsed < 5.0, f"50 x pg_sleep(0.5) on psycopg 3 took {elapsed:.2f}s with -c 50 (25 s serially)"
    assert overlap(pg_db, slept_table) >= 25, "the queries did not run at the same time"
    assert len({b for (b,) in pg_db.query(f"SELECT DISTINCT backend FROM {slept_table}")}) == 50, "a connection each"
    wait_for(lambda: pg_db.connections() == 0, 10, "the jobs' connections to close")
    assert worker.stop() == 0
    assert "Traceback" not in worker.output(), worker.output()


def test_psycopg_pool_jobs_share_the_pool_concurrently(ns, legacy_worker, pg_db, slept_table) -> None:
    size = legacy_jobs.POOL_SIZE
    worker = legacy_worker(50, "--preempt", "0")
    elapsed = run_pg_sleep_jobs(legacy_jobs.run_sql_pooled, pg_db, slept_table, 50, 0.5)
    # 50 jobs on 10 connections: 5 rounds of 0.5 s at best, 25 s serially
    assert elapsed < 8.0, f"50 x pg_sleep(0.5) on a pool of {size} took {elapsed:.2f}s with -c 50 (25 s serially)"
    most = overlap(pg_db, slept_table)
    assert size // 2 <= most <= size, f"{most} queries at once on a pool of {size}"
    backends = {b for (b,) in pg_db.query(f"SELECT DISTINCT backend FROM {slept_table}")}
    assert 1 < len(backends) <= size, f"{len(backends)} connections served the jobs"
    # the pool keeps its connections open between jobs; they go when the worker exits
    assert pg_db.connections() == size
    assert worker.stop() == 0
    wait_for(lambda: pg_db.connections() == 0, 10, "the pool's connections to close")
    assert "Traceback" not in worker.output() and "WARNING" not in worker.output(), worker.output()


def test_http_jobs_requests_and_urllib_run_concurrently(ns, legacy_worker, r) -> None:
    hits = Recorder()
    server = http_peer(0.2, hits)
    with serving(server) as (host, port):
        worker = legacy_worker(100)
        base = f"http://{host}:{port}"
        start = time.monotonic()
        legacy_jobs.fetch_url.enqueue_bulk([(f"{base}/requests/{n}",) for n in range(50)])
        legacy_jobs.fetch_url_stdlib.enqueue_bulk([(f"{base}/urllib/{n}",) for n in range(50)])
        elapsed = timed(lambda: len(hits) >= 100, 30, "100 HTTP jobs", start)
        assert elapsed < 3.0, f"100 requests answered after 0.2 s each took {elapsed:.2f}s with -c 100 (20 s serially)"
        expected = {f"/requests/{n}" for n in range(50)} | {f"/urllib/{n}" for n in range(50)}
        assert sorted(hits.items()) == sorted(expected)

        # an HTTP error status is a failed job, retried later like any other failure
        jid = legacy_jobs.fetch_url.enqueue(f"{base}/status/503")
        entry = wait_for(
            lambda: next((e for e in api.RetrySet() if e.jid == jid), None), 15, "the failed GET in retries"
        )
        assert entry.error_class == "HTTPError" and "503" in entry.error_message
        assert worker.stop() == 0


def test_smtplib_jobs_run_concurrently(ns, legacy_worker) -> None:
    messages = Recorder()
    # 1 s per mail: 20 s serially, so the bound below has room for a loaded machine and still tells the two apart
    with serving(smtp_peer(1.0, messages)) as (host, port):
        worker = legacy_worker(20)
        start = time.monotonic()
        legacy_jobs.send_email.enqueue_bulk(
            [(host, port, "shop@example.com", f"user{n}@example.com", f"order {n}", f"body {n}") for n in range(20)]
        )
        elapsed = timed(lambda: len(messages) >= 20, 30, "20 mails", start)
        assert elapsed < 8.0, f"20 mails accepted after 1 s each took {elapsed:.2f}s with -c 20 (20 s serially)"
        by_user = {int(re.search(r"<user(\d+)@example\.com>", m["rcpt"][0]).group(1)): m for m in messages.items()}
        assert sorted(by_user) == list(range(20)), "each mail delivered once, to its recipient"
        assert all(f"Subject: order {n}" in m["data"] and f"body {n}" in m["data"] for n, m in by_user.items())
        assert worker.stop() == 0


def test_socket_jobs_run_concurrently(ns, legacy_worker) -> None:
    lines = Recorder()
    with serving(line_peer(0.5, lines)) as (host, port):
        worker = legacy_worker(40)
        start = time.monotonic()
        legacy_jobs.send_line.enqueue_bulk([(host, port, f"line {n}") for n in range(40)])
        elapsed = timed(lambda: len(lines) >= 40, 30, "40 socket jobs", start)
        assert elapsed < 5.0, f"40 socket round trips of 0.5 s took {elapsed:.2f}s with -c 40 (20 s serially)"
        assert sorted(lines.items()) == sorted(f"line {n}" for n in range(40))
        assert worker.stop() == 0


def test_subprocess_jobs_run_concurrently(ns, legacy_worker, tmp_path) -> None:
    worker = legacy_worker(20)
    outputs = [tmp_path / f"out-{n}.txt" for n in range(20)]
    start = time.monotonic()
    legacy_jobs.run_command.enqueue_bulk(
        # 1 s each: 20 s serially, so the bound below has room for 20 forks on a loaded machine
        [(["sh", "-c", 'sleep 1; echo "done $1"', "sh", str(n)], str(path)) for n, path in enumerate(outputs)]
    )

    def all_written() -> bool:
        return all(p.exists() and p.read_text() == f"done {n}\n" for n, p in enumerate(outputs))

    elapsed = timed(all_written, 30, "20 subprocess jobs", start)
    assert elapsed < 8.0, f"20 programs sleeping 1 s took {elapsed:.2f}s with -c 20 (20 s serially)"
    assert worker.stop() == 0


def test_file_io_jobs(ns, legacy_worker, tmp_path) -> None:
    worker = legacy_worker(20)
    files = []
    for n in range(30):
        path = tmp_path / f"data-{n}.bin"
        path.write_bytes(os.urandom(256 * 1024 + n))
        files.append((path, tmp_path / f"data-{n}.sha256"))
    legacy_jobs.checksum_file.enqueue_bulk([(str(src), str(dst)) for src, dst in files])

    def digests_written() -> bool:
        return all(dst.exists() and len(dst.read_text()) == 64 for _, dst in files)

    wait_for(digests_written, 30, "30 checksum jobs")
    for src, dst in files:
        assert dst.read_text() == hashlib.sha256(src.read_bytes()).hexdigest()
    assert worker.stop() == 0
