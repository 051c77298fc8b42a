"""The central store on PostgreSQL: migrations, partitions, enrolment tokens, ingest, export.

Every statement is parameterised; the only identifiers composed into SQL are partition names,
built from dates with :mod:`psycopg.sql` (quoted, never interpolated text).

Ingest is COPY into a per-session temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the partitioned table, in one transaction:
a retried batch, or the same batch arriving at two collectors at once, adds each measurement once
(the second transaction waits on the first one's unique-index entries, then does nothing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from probe.fleet.contract import Measurement

COLUMNS = (
    "day", "measurement_uid", "probe_id", "probe_cc", "probe_asn", "test_name", "input", "service",
    "measurement_start_time", "body",
)
_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)

STAGING_DDL = sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS staging ("
    " day date, measurement_uid uuid, probe_id text, probe_cc text, probe_asn text, test_name text,"
    " input text, service text, measurement_start_time timestamptz, body jsonb"
    ") ON COMMIT DELETE ROWS"
)
COPY_STAGING = sql.SQL("COPY staging ({}) FROM STDIN").format(_COLS)
MERGE_STAGING = sql.SQL(
    "INSERT INTO measurements ({cols}) SELECT {cols} FROM staging ON CONFLICT DO NOTHING RETURNING measurement_uid"
).format(cols=_COLS)
COPY_DIRECT = sql.SQL("COPY measurements ({}) FROM STDIN").format(_COLS)

AUTHENTICATE = (
    "SELECT p.probe_id FROM probes p JOIN enrol_tokens t ON t.id = p.token_id"
    " WHERE p.credential_hash = %s AND t.revoked_at IS NULL"
)
TOKEN_ID = "SELECT id FROM enrol_tokens WHERE token_hash = %s AND revoked_at IS NULL"
ENROL = (
    "INSERT INTO probes (probe_id, token_id, credential_hash) VALUES (%s, %s, %s)"
    " ON CONFLICT (probe_id) DO NOTHING"
)
PARTITION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_LOCK_PARTITIONS = 0x70726F62  # "prob"
_LOCK_MIGRATIONS = 0x6D696772  # "migr"


class CentralError(Exception):
    """The central store refused an operation (bad token, unknown label, ...)."""


def secret_hash(secret: str) -> bytes:
    """SHA-256 of a 256-bit random secret: enough, since such a secret cannot be guessed."""
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    """256 random bits, URL-safe; never starting with "-" (``probe enrol URL TOKEN`` would
    take such a token for an option: one token in 64 did)."""
    return "p" + secrets.token_urlsafe(32)


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise CentralError(f"cannot connect to the database: {exc}") from None


# -- Migrations ---------------------------------------------------------------------------------

def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration in the package, in order."""
    found = []
    for entry in resources.files("probe.fleet.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection[Any], *, ahead_days: int = 2, today: dt.date | None = None) -> list[str]:
    """Apply the migrations not applied yet (each in its own transaction); returns their names.

    Then creates the partitions for today and ``ahead_days`` after it. Safe to run from several
    places at once: an advisory lock serialises it.
    """
    applied: list[str] = []
    with conn.transaction():
        conn.execute(PARTITION_LOCK, (_LOCK_MIGRATIONS,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, text in migrations():
            if version in done:
                continue
            conn.execute(text.encode())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(name)
    day = today or dt.datetime.now(dt.UTC).date()
    ensure_partitions(conn, [day + dt.timedelta(days=k) for k in range(ahead_days + 1)])
    return applied


# -- Partitions ---------------------------------------------------------------------------------

def partition_name(day: dt.date) -> str:
    return f"measurements_{day:%Y%m%d}"


def partition_ddl(day: dt.date) -> sql.Composed:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF measurements FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(partition_name(day)), sql.Literal(day), sql.Literal(day + dt.timedelta(days=1))
    )


def ensure_partitions(conn: psycopg.Connection[Any], days: Iterable[dt.date]) -> None:
    with conn.transaction():
        conn.execute(PARTITION_LOCK, (_LOCK_PARTITIONS,))
        for day in sorted(set(days)):
            conn.execute(partition_ddl(day))


async def ensure_partitions_async(conn: psycopg.AsyncConnection[Any], days: Iterable[dt.date]) -> None:
    async with conn.transaction():
        await conn.execute(PARTITION_LOCK, (_LOCK_PARTITIONS,))
        for day in sorted(set(days)):
            await conn.execute(partition_ddl(day))


def partitions(conn: psycopg.Connection[Any]) -> list[dt.date]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'measurements'::regclass"
    ).fetchall()
    return sorted(dt.datetime.strptime(name.removeprefix("measurements_"), "%Y%m%d").date() for (name,) in rows)


def drop_older(conn: psycopg.Connection[Any], keep_days: int, *, today: dt.date | None = None) -> list[dt.date]:
    """Retention: drop whole day partitions older than ``keep_days`` before today."""
    cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=keep_days)
    dropped = [day for day in partitions(conn) if day < cutoff]
    with conn.transaction():
        conn.execute(PARTITION_LOCK, (_LOCK_PARTITIONS,))
        for day in dropped:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(partition_name(day))))
    return dropped


# -- Enrolment tokens ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    id: int
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    probes: int


def create_token(conn: psycopg.Connection[Any], label: str) -> str:
    """A new enrolment token (shown once; only its hash is kept)."""
    token = new_secret()
    with conn.transaction():
        conn.execute("INSERT INTO enrol_tokens (label, token_hash) VALUES (%s, %s)", (label, secret_hash(token)))
    return token


def list_tokens(conn: psycopg.Connection[Any]) -> list[Token]:
    rows = conn.execute(
        "SELECT t.id, t.label, t.created_at, t.revoked_at, count(p.probe_id) FROM enrol_tokens t"
        " LEFT JOIN probes p ON p.token_id = t.id GROUP BY t.id ORDER BY t.id"
    ).fetchall()
    return [Token(*row) for row in rows]


def revoke_token(conn: psycopg.Connection[Any], ref: str) -> int:
    """Revoke the token with this id or label; its probes' credentials stop working with it."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE enrol_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
            " AND (label = %s OR id::text = %s)", (ref, ref)
        )
    if cur.rowcount == 0:
        raise CentralError(f"no active token with id or label {ref!r}")
    return cur.rowcount


# -- Ingest -------------------------------------------------------------------------------------

def row(m: Measurement) -> tuple[Any, ...]:
    return (m.day, m.uid, m.probe_id, m.probe_cc, m.probe_asn, m.test_name, m.input, m.service,
            m.start_time, m.body)


async def ingest(conn: psycopg.AsyncConnection[Any], batch: Sequence[Measurement]) -> list[Measurement]:
    """Store a batch atomically (``conn`` in autocommit mode); returns the measurements that were new
    (the rest were duplicates).

    The fast path COPYs straight into the table; a batch with any measurement already stored
    (a retry, or the same batch at another collector at the same moment) fails on the unique key,
    and is then merged through the staging table, which skips what is there.
    """
    try:
        await _copy(conn, COPY_DIRECT, batch)  # one statement in autocommit: atomic, no BEGIN/COMMIT trips
        return list(batch)
    except psycopg.errors.UniqueViolation:
        pass
    async with conn.transaction():
        await conn.execute(STAGING_DDL)
        await _copy(conn, COPY_STAGING, batch)
        cur = await conn.execute(MERGE_STAGING)
        new = {row[0] for row in await cur.fetchall()}
    return [m for m in batch if m.uid in new]


async def _copy(conn: psycopg.AsyncConnection[Any], statement: sql.Composed, batch: Sequence[Measurement]) -> None:
    async with conn.cursor().copy(statement) as copy:
        for m in batch:
            await copy.write_row(row(m))


# -- Export -------------------------------------------------------------------------------------

def export_rows(
    conn: psycopg.Connection[Any],
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    cc: str | None = None,
    asn: str | None = None,
    service: str | None = None,
    itersize: int = 2000,
) -> Iterator[tuple[Any, ...]]:
    """(uid, probe_id, probe_cc, probe_asn, test_name, input, service, start_time, body text) in
    start-time order, through a server-side cursor: constant memory whatever the range."""
    where = ["day >= %(since_day)s", "measurement_start_time >= %(since)s"]
    params: dict[str, Any] = {"since": since, "since_day": since.date() - dt.timedelta(days=1)}
    for column, value in (("probe_cc", cc), ("probe_asn", asn), ("service", service)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    if until is not None:
        where.append("measurement_start_time < %(until)s")
        params["until"] = until
    query = (
        "SELECT measurement_uid, probe_id, probe_cc, probe_asn, test_name, input, service,"
        " measurement_start_time, body::text FROM measurements WHERE " + " AND ".join(where)
        + " ORDER BY measurement_start_time, measurement_uid"
    )
    with conn.transaction(), conn.cursor(name="probe_export") as cur:
        cur.itersize = itersize
        cur.execute(query.encode(), params)
        yield from cur
