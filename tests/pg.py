"""PostgreSQL fixtures: a real server, and databases of the test session's own (dropped at the end).

Server: $JIGGLER_TEST_PG_URL, else postgresql://postgres@127.0.0.1:5432/postgres (an admin connection that
may create databases). No PostgreSQL fails the tests that need it (never a skip).
"""

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


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
        """Sessions open on this database now, other than the admin's."""
        return _run(
            self.admin_dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
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
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    dsn = os.environ.get("JIGGLER_TEST_PG_URL", DEFAULT_ADMIN_URL)
    try:
        _run(dsn, "SELECT 1")
    except psycopg2.Error as exc:
        pytest.fail(f"these tests need a real PostgreSQL at {dsn}: {exc}", pytrace=False)
    return dsn


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
