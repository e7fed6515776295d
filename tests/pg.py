"""PostgreSQL fixtures: a real server, and databases of the test session's own (dropped at the end).

Server: the one $JIGGLER_TEST_PG_URL names (an admin connection that may create databases), else a private one the
session makes with Debian's PostgreSQL binaries (initdb into a temporary directory, trust auth, a free loopback
port, fsync off) and removes at the end; as root it runs as the `postgres` user, since PostgreSQL refuses root.
No PostgreSQL fails the tests that need it (never a skip).
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from jiggler_gevent.demo.local_redis import free_port

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
TESTS_APPLICATION_NAME = "jiggler-tests"  # the tests' own sessions, which connections() leaves out


@dataclass(frozen=True)
class PgDatabase:
    """A database created for the tests."""

    name: str
    dsn: str
    admin_dsn: str

    @property
    def env(self) -> dict[str, str]:
        """The libpq PG* variables that point at this database (the Django example reads them)."""
        parts = urlsplit(self.dsn)
        env = {
            "PGDATABASE": self.name,
            "PGHOST": parts.hostname or "127.0.0.1",
            "PGPORT": str(parts.port or 5432),
            "PGUSER": parts.username or "postgres",
        }
        if parts.password:
            env["PGPASSWORD"] = parts.password
        return env

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement in this database in autocommit mode; its rows (empty for no result)."""
        return _run(self.dsn, sql, params)

    def connections(self) -> int:
        """Client sessions open on this database now, other than the tests' own (query() and the admin's).

        A session the tests just closed may still be listed until its backend exits, which PostgreSQL does after
        the client has gone: counting it made a pool of 10 read 11 now and then. An autovacuum worker is not a
        client session either.
        """
        return _run(
            self.admin_dsn,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend' AND application_name <> %s",
            (self.name, TESTS_APPLICATION_NAME),
        )[0][0]


def max_overlap(intervals: Sequence[tuple[Any, Any]]) -> int:
    """The most (start, end) intervals that contain one same moment: 1 when they ran one after another."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in events:  # at a tie an end (-1) sorts before a start: touching intervals do not overlap
        running += step
        most = max(most, running)
    return most


def _run(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn, application_name=TESTS_APPLICATION_NAME)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: `start()` returns its admin DSN, `stop()` removes it."""

    def __init__(self) -> None:
        versions = sorted(glob.glob(PG_BIN_GLOB), key=lambda d: int(d.split("/")[-2]))
        if not versions:
            pytest.fail("these tests need PostgreSQL's binaries (apt-get install postgresql)", pytrace=False)
        self.bin = versions[-1]
        self.dir = tempfile.mkdtemp(prefix="jiggler-pg-")
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, f"{self.bin}/{tool}", *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def start(self) -> str:
        data = f"{self.dir}/data"
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run("pg_ctl", "-D", data, "-o", options, "-l", f"{self.dir}/log", "-w", "-t", "60", "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        data = f"{self.dir}/data"
        if os.path.exists(f"{data}/postmaster.pid"):
            self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """The admin DSN of the session's PostgreSQL (see the module's docstring)."""
    given = os.environ.get("JIGGLER_TEST_PG_URL")
    if given:
        try:
            _run(given, "SELECT 1")
        except psycopg2.Error as exc:
            pytest.fail(f"no PostgreSQL answers at $JIGGLER_TEST_PG_URL: {exc}", pytrace=False)
        yield given
        return
    server = PrivatePostgres()
    try:
        dsn = server.start()
    except AssertionError as exc:
        server.stop()
        pytest.fail(f"these tests need a real PostgreSQL: {exc}", pytrace=False)
    yield dsn
    server.stop()


@pytest.fixture(scope="session")
def pg_create_database(pg_admin_dsn: str) -> Iterator[Callable[[str], PgDatabase]]:
    """A factory: `pg_create_database("label")` creates a uniquely named database; all are dropped at the end."""
    created: list[PgDatabase] = []

    def create(label: str) -> PgDatabase:
        name = f"jiggler_test_{label}_{uuid.uuid4().hex[:8]}"
        _run(pg_admin_dsn, f'CREATE DATABASE "{name}"')
        db = PgDatabase(name, _with_database(pg_admin_dsn, name), pg_admin_dsn)
        created.append(db)
        return db

    yield create
    for db in created:
        _run(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_db(pg_create_database: Callable[[str], PgDatabase]) -> PgDatabase:
    """One database for the session's plain psycopg2 tests."""
    return pg_create_database("main")
