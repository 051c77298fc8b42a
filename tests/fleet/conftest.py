"""The fleet's fixtures: one private PostgreSQL cluster per session, a fresh database per test,
collectors as real child processes, enrolment tokens."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from probe.fleet import central
from probe.fleet.localpg import Cluster, CollectorProcess, pg_bin

_names = itertools.count()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries missing (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def db(cluster: Cluster) -> str:
    """A migrated, empty database of its own."""
    dsn = cluster.create_database(f"fleet_{next(_names)}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        central.migrate(conn)
    return dsn


@pytest.fixture
def token(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        return central.create_token(conn, "test-ngo")


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Start collectors on demand (``start(dsn, *extra_args)``); all stopped at the end."""
    started: list[CollectorProcess] = []

    def start(dsn: str, *extra: str, log: Path | None = None, **kwargs: object) -> CollectorProcess:
        proc = CollectorProcess(dsn, log or tmp_path / f"collector-{len(started)}.log", extra=extra)
        started.append(proc)
        proc.start(**kwargs)  # type: ignore[arg-type]
        return proc

    yield start
    for proc in started:
        proc.stop()


def count(dsn: str, query: str = "SELECT count(*), count(DISTINCT measurement_uid) FROM measurements",
          params: tuple[object, ...] = ()) -> tuple[int, ...]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        assert row is not None
        return tuple(row)
