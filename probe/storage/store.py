"""The local store: SQLite in WAL mode, append-only records, events and probe metadata.

Layout (schema version :data:`SCHEMA`, kept in ``PRAGMA user_version``)::

    meta(key PRIMARY KEY, value)                 the probe_id, once generated
    envelopes(eid, fields UNIQUE, last_us)       run-level fields shared by many records
    records(seq, id UNIQUE, t_us, eid, target, service, record_type, test_name,
            head, test_keys)                     one row per check or verdict record
    events(id PRIMARY KEY, ..., body)            blocking/throttling episodes (upserted)
    records_json (view)                          the full record JSON of every row

A record dict is split, losslessly, into three JSON texts: its *envelope* (the
fields that are the same for a whole run: ``schema_version``, ``report_id``,
``probe_id``, ``probe_cc``, ``probe_asn``, ``probe_network_name``,
``software_name``, ``software_version``), stored once per distinct value; its
*head* (every other top-level field); and its ``test_keys``. The full record is
``envelope + head + {"test_keys": ...}`` (the ``records_json`` view builds it in
SQL). The split is measured, not aesthetic: the Parquet export parses the flat
heads in bulk with Arrow's JSON reader, keeps ``test_keys`` as text without
parsing it, and takes the envelope columns from a handful of rows, which is what
makes a million-record export fit in seconds and a few hundred MB (see
``bench/export_bench.py``). The indexed columns (time as integer microseconds
since the epoch, target, service, record_type, test_name, id) serve queries.

Durability: :meth:`Store.append` buffers records and commits them in batches
(``batch_size`` records, or when the oldest buffered record is ``flush_seconds``
old, checked on each append). Each batch is one transaction with
``synchronous=FULL``: a crash loses at most the batch not yet committed, never
part of one. Call :meth:`Store.flush` at the end of a run.

Retention: :meth:`Store.prune` deletes records (and finished events) older than
``retention_days`` and returns the freed pages to the file system
(``auto_vacuum=INCREMENTAL``). It runs when a writable store is opened and then
at most once an hour, on a flush; so the file stays bounded by the retention
window. ``UPDATE`` on records is refused by a trigger: the table is append-only
and only retention deletes from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from probe.core.records import Event, default_probe_id

SCHEMA = 1

#: Top-level fields that are constant for one run (one report): stored once.
ENVELOPE_FIELDS: tuple[str, ...] = (
    "schema_version",
    "report_id",
    "probe_id",
    "probe_cc",
    "probe_asn",
    "probe_network_name",
    "software_name",
    "software_version",
)

#: The order of the fields in a record as :mod:`probe.core.records` builds it.
FIELD_ORDER: tuple[str, ...] = (
    "schema_version",
    "record_type",
    "id",
    "report_id",
    "probe_id",
    "probe_cc",
    "probe_asn",
    "probe_network_name",
    "software_name",
    "software_version",
    "measurement_start_time",
    "test_name",
    "test_runtime",
    "input",
    "target",
    "service",
    "category",
    "role",
    "ok",
    "failure",
    "failed_operation",
    "test_keys",
)

#: Field names that would identify the volunteer's address; never stored or exported.
FORBIDDEN_KEYS: frozenset[str] = frozenset({"probe_ip", "client_ip"})

_REQUIRED = ("id", "measurement_start_time", "target", "service", "record_type", "test_name")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_PRUNE_EVERY = 3600.0
_FETCH = 1000

_DDL = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE envelopes (
        eid INTEGER PRIMARY KEY,
        fields TEXT NOT NULL UNIQUE,
        last_us INTEGER NOT NULL)""",
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        t_us INTEGER NOT NULL,
        eid INTEGER NOT NULL REFERENCES envelopes(eid),
        target TEXT NOT NULL,
        service TEXT NOT NULL,
        record_type TEXT NOT NULL,
        test_name TEXT NOT NULL,
        head TEXT NOT NULL,
        test_keys TEXT NOT NULL)""",
    "CREATE INDEX records_time ON records(t_us)",
    "CREATE INDEX records_target_time ON records(target, t_us)",
    "CREATE INDEX records_service_time ON records(service, t_us)",
    "CREATE INDEX records_type_time ON records(record_type, t_us)",
    """CREATE TRIGGER records_append_only BEFORE UPDATE ON records
        BEGIN SELECT RAISE(ABORT, 'records are append-only'); END""",
    """CREATE TABLE events (
        id TEXT PRIMARY KEY,
        probe_id TEXT NOT NULL,
        target TEXT NOT NULL,
        service TEXT NOT NULL,
        type TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER,
        body TEXT NOT NULL)""",
    "CREATE INDEX events_start ON events(start_us)",
    "CREATE INDEX events_target ON events(target, start_us)",
    """CREATE VIEW records_json AS
        SELECT r.seq, r.id, r.t_us, r.target, r.service, r.record_type, r.test_name,
               '{' || iif(e.fields = '{}', '', substr(e.fields, 2, length(e.fields) - 2) || ',')
                   || iif(r.head = '{}', '', substr(r.head, 2, length(r.head) - 2) || ',')
                   || '"test_keys":' || r.test_keys || '}' AS record
        FROM records r JOIN envelopes e USING (eid)""",
)


class StoreError(Exception):
    """The store cannot be used (missing, corrupt, newer schema, disk error); names the path."""


def time_us(text: str) -> int:
    """RFC 3339 text to integer microseconds since the epoch, exactly (no float rounding)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // _US


def seconds_to_us(epoch: float) -> int:
    return round(epoch * 1_000_000)


def strip_forbidden(value: Any) -> Any:
    """A copy of ``value`` without any key in :data:`FORBIDDEN_KEYS`, at any depth."""
    if isinstance(value, Mapping):
        return {k: strip_forbidden(v) for k, v in value.items() if k not in FORBIDDEN_KEYS}
    if isinstance(value, list):
        return [strip_forbidden(v) for v in value]
    return value


def mentions_forbidden(text: str) -> bool:
    """Cheap pre-check on JSON text before walking it with :func:`strip_forbidden`."""
    return any(f'"{key}"' in text for key in FORBIDDEN_KEYS)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclasses.dataclass(frozen=True)
class RawRow:
    """One stored record as its three JSON texts (for exporters that avoid parsing)."""

    t_us: int
    eid: int
    head: str
    test_keys: str


class Store:
    """Append-only SQLite store of measurement records and events.

    Use as a context manager, or call :meth:`close` (idempotent). One thread at
    a time (it may move between threads, e.g. a flush in an executor, but is not
    locked for concurrent use); several processes may open the same file (WAL:
    readers never block the writer). ``clock`` gives wall time in epoch seconds,
    for flush ages and retention; tests inject it.
    """

    def __init__(
        self,
        path: str | Path,
        retention_days: float | None = 90,
        batch_size: int = 500,
        flush_seconds: float = 5.0,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = Path(path)
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.readonly = readonly
        self.clock = clock
        self._buffer: list[tuple[Any, ...]] = []
        self._buffer_since = 0.0
        self._new_envelopes: dict[str, int] = {}  # fields JSON -> max t_us in the buffer
        self._envelope_ids: dict[str, int] = {}
        self._envelope_texts: dict[int, str] = {}
        self._closed = False
        self._last_prune = clock()
        self._conn = self._open()
        if not readonly and retention_days is not None:
            self.prune()

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (for inspection and tests; write through the methods)."""
        return self._conn

    # -- Opening -----------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {exc}" if exc is not None else ""
        return StoreError(f"{self.path}: {what}{detail}")

    def _open(self) -> sqlite3.Connection:
        if self.readonly and not self.path.is_file():
            raise self._fail("no such store (run `probe run` first, or pass --store)")
        if not self.readonly and self.path.exists() and not self.path.is_file():
            raise self._fail("is not a file")
        try:
            if self.readonly:
                uri = f"file:{self.path.resolve()}?mode=ro"
                conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail("cannot open the store", exc) from None
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA:
                raise self._fail(
                    f"store schema version {version} is newer than this probe supports "
                    f"({SCHEMA}); upgrade the probe, or use another --store"
                )
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise self._fail("is an SQLite database but not a probe store")
                if self.readonly:
                    raise self._fail("is empty, not a probe store")
                self._create(conn)
            else:
                has_envelopes = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'envelopes'"
                ).fetchone()[0]
                if not has_envelopes:  # a development build's layout under the same version
                    raise self._fail("has an unsupported layout (no envelopes table); "
                                     "move it away and let the probe create a new store")
                if not self.readonly:
                    conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._fail("not a usable SQLite store (not a database, or corrupt)", exc) from None
        return conn

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # must precede the first table
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- Lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush what is buffered and close; calling it again does nothing."""
        if self._closed:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            self._closed = True
            self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise self._fail("the store is closed")

    # -- Records -----------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Buffer records; commit when the batch is full or old enough.

        A record whose ``id`` is already stored is ignored (appending twice is
        harmless). Raises ValueError for a record that lacks a required field.
        """
        self._check_open()
        if self.readonly:
            raise self._fail("opened read-only")
        for record in records:
            self._buffer.append(self._row(record))
            if len(self._buffer) == 1:
                self._buffer_since = self.clock()
            if len(self._buffer) >= self.batch_size:
                self.flush()
        if self._buffer and self.clock() - self._buffer_since >= self.flush_seconds:
            self.flush()

    def _row(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        missing = [key for key in _REQUIRED if not isinstance(record.get(key), str)]
        if missing:
            raise ValueError(f"record lacks required text field(s): {', '.join(missing)}")
        try:
            t_us = time_us(record["measurement_start_time"])
        except ValueError:
            raise ValueError(
                f"record {record['id']}: bad measurement_start_time "
                f"{record['measurement_start_time']!r}"
            ) from None
        envelope = _dumps({k: record[k] for k in ENVELOPE_FIELDS if k in record})
        head_fields = {
            k: v
            for k, v in record.items()
            if k not in ENVELOPE_FIELDS and k != "test_keys" and k not in FORBIDDEN_KEYS
        }
        head = _dumps(head_fields)
        test_keys = _dumps(record.get("test_keys") or {})
        if mentions_forbidden(test_keys):
            test_keys = _dumps(strip_forbidden(json.loads(test_keys)))
        if mentions_forbidden(head):
            head = _dumps(strip_forbidden(head_fields))
        if t_us > self._new_envelopes.get(envelope, -(1 << 62)):
            self._new_envelopes[envelope] = t_us
        return (
            record["id"], t_us, envelope, record["target"], record["service"],
            record["record_type"], record["test_name"], head, test_keys,
        )

    def flush(self) -> None:
        """Commit the buffered records as one transaction."""
        self._check_open()
        if not self._buffer:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = self._envelope_rows(self._new_envelopes)
                conn.executemany(
                    "INSERT OR IGNORE INTO records (id, t_us, eid, target, service, record_type,"
                    " test_name, head, test_keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(r[0], r[1], ids[r[2]], *r[3:]) for r in self._buffer],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._envelope_ids.clear()  # the rollback may have undone new envelopes
                raise
        except sqlite3.Error as exc:
            raise self._fail("cannot write the store", exc) from None
        self._buffer.clear()
        self._new_envelopes.clear()
        if self.retention_days is not None and self.clock() - self._last_prune >= _PRUNE_EVERY:
            self.prune()

    def _envelope_rows(self, envelopes: Mapping[str, int]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for fields, last_us in envelopes.items():
            eid = self._envelope_ids.get(fields)
            if eid is None:
                row = self._conn.execute(
                    "INSERT INTO envelopes (fields, last_us) VALUES (?, ?) "
                    "ON CONFLICT (fields) DO UPDATE SET last_us = max(last_us, excluded.last_us) "
                    "RETURNING eid",
                    (fields, last_us),
                ).fetchone()
                eid = int(row[0])
                if len(self._envelope_ids) > 10_000:
                    self._envelope_ids.clear()
                self._envelope_ids[fields] = eid
            else:
                self._conn.execute(
                    "UPDATE envelopes SET last_us = max(last_us, ?) WHERE eid = ?", (last_us, eid)
                )
            ids[fields] = eid
        return ids

    def _where(
        self,
        since: float | None,
        until: float | None,
        filters: Mapping[str, str | None],
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("r.t_us >= ?")
            params.append(seconds_to_us(since))
        if until is not None:
            clauses.append("r.t_us < ?")
            params.append(seconds_to_us(until))
        for column, value in filters.items():
            if value is not None:
                clauses.append(f"r.{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _select(
        self,
        columns: str,
        since: float | None,
        until: float | None,
        target: str | None,
        service: str | None,
        record_type: str | None,
        test_name: str | None,
        limit: int | None,
        newest_first: bool,
    ) -> sqlite3.Cursor:
        self._check_open()
        if not self.readonly:
            self.flush()
        where, params = self._where(
            since, until,
            {"target": target, "service": service, "record_type": record_type,
             "test_name": test_name},
        )
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {columns} FROM records r{where} ORDER BY r.t_us {order}, r.seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        try:
            return self._conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None

    def query(
        self,
        since: float | None = None,
        until: float | None = None,
        target: str | None = None,
        service: str | None = None,
        record_type: str | None = None,
        test_name: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records as dicts, oldest first (``since`` inclusive, ``until`` exclusive, epoch s).

        Streams: rows are fetched in small batches, so memory stays constant
        whatever the number of matching records.
        """
        cursor = self._select(
            "r.eid, r.head, r.test_keys", since, until, target, service, record_type,
            test_name, limit, newest_first,
        )
        envelopes: dict[int, dict[str, Any]] = {}
        try:
            while rows := cursor.fetchmany(_FETCH):
                if len(envelopes) > 1000:
                    envelopes.clear()
                missing = {eid for eid, _, _ in rows if eid not in envelopes}
                if missing:
                    envelopes.update(
                        (eid, json.loads(text)) for eid, text in self.envelopes(missing).items()
                    )
                for eid, head, test_keys in rows:
                    yield _assemble(envelopes[eid], json.loads(head), json.loads(test_keys))
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # store closed first
                cursor.close()

    def query_json(
        self,
        since: float | None = None,
        until: float | None = None,
        target: str | None = None,
        service: str | None = None,
        record_type: str | None = None,
        test_name: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[str]:
        """The same as :meth:`query`, as JSON text per record, without parsing (for exports)."""
        cursor = self._select(
            "r.eid, r.head, r.test_keys", since, until, target, service, record_type,
            test_name, limit, newest_first,
        )
        try:
            while rows := cursor.fetchmany(_FETCH):
                texts = self.envelopes([eid for eid, _, _ in rows])
                for eid, head, test_keys in rows:
                    yield record_json(texts[eid], head, test_keys)
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # store closed first
                cursor.close()

    def query_raw(
        self,
        since: float | None = None,
        until: float | None = None,
        target: str | None = None,
        service: str | None = None,
        record_type: str | None = None,
        test_name: str | None = None,
        batch: int = 50_000,
    ) -> Generator[list[tuple[int, int, str, str]], None, None]:
        """Batches of ``(t_us, eid, head, test_keys)`` rows, oldest first, unparsed.

        For exporters: envelope texts come from :meth:`envelopes`.
        """
        cursor = self._select(
            "r.t_us, r.eid, r.head, r.test_keys", since, until, target, service, record_type,
            test_name, None, False,
        )
        try:
            while rows := cursor.fetchmany(batch):
                yield rows
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # store closed first
                cursor.close()

    def envelopes(self, eids: Iterable[int]) -> dict[int, str]:
        """The envelope JSON text of each given envelope id."""
        eids = list(eids)
        if len(self._envelope_texts) > 10_000:
            self._envelope_texts.clear()
        wanted = [eid for eid in set(eids) if eid not in self._envelope_texts]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT eid, fields FROM envelopes WHERE eid IN ({marks})", chunk
            ).fetchall()
            self._envelope_texts.update(rows)
        return {eid: self._envelope_texts[eid] for eid in eids}

    def count(self) -> int:
        """Number of stored records (flushes first)."""
        self._check_open()
        if not self.readonly:
            self.flush()
        return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def prune(self, now: float | None = None) -> int:
        """Delete records and finished events older than the retention; returns records deleted.

        ``now`` defaults to the store's clock (wall time, epoch seconds).
        """
        self._check_open()
        if now is None:
            now = self.clock()
        self._last_prune = self.clock()
        if not self.readonly and self._buffer:
            self.flush()
        if self.retention_days is None or self.readonly:
            return 0
        cutoff = seconds_to_us(now - self.retention_days * 86400.0)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute("DELETE FROM records WHERE t_us < ?", (cutoff,)).rowcount
                conn.execute("DELETE FROM envelopes WHERE last_us < ?", (cutoff,))
                conn.execute(
                    "DELETE FROM events WHERE end_us IS NOT NULL AND end_us < ?", (cutoff,)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._envelope_ids.clear()
            self._envelope_texts.clear()
            if deleted:
                conn.executescript("PRAGMA incremental_vacuum")  # execute() frees one page only
        except sqlite3.Error as exc:
            raise self._fail("cannot prune the store", exc) from None
        return int(deleted)

    # -- Events ------------------------------------------------------------------

    def save_events(self, events: Iterable[Event]) -> None:
        """Insert or replace events by id (an ongoing event is saved again when it ends)."""
        self._check_open()
        rows = [
            (
                e.id, e.probe_id, e.target, e.service, e.type, seconds_to_us(e.start_time),
                None if e.end_time is None else seconds_to_us(e.end_time),
                _dumps(_event_dict(e)),
            )
            for e in events
        ]
        if not rows:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO events (id, probe_id, target, service, type, start_us, end_us,"
                    " body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " probe_id = excluded.probe_id, target = excluded.target,"
                    " service = excluded.service, type = excluded.type,"
                    " start_us = excluded.start_us, end_us = excluded.end_us,"
                    " body = excluded.body",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("cannot write events", exc) from None

    def events(
        self,
        since: float | None = None,
        target: str | None = None,
        ongoing: bool | None = None,
        until: float | None = None,
        service: str | None = None,
    ) -> list[Event]:
        """Events overlapping ``[since, until)``, oldest start first.

        An event counts as overlapping when it started before ``until`` and is
        ongoing or ended at or after ``since``: a blocking that began before
        ``since`` and is still on is part of "what happened since".
        """
        self._check_open()
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("(end_us IS NULL OR end_us >= ?)")
            params.append(seconds_to_us(since))
        if until is not None:
            clauses.append("start_us < ?")
            params.append(seconds_to_us(until))
        if target is not None:
            clauses.append("target = ?")
            params.append(target)
        if service is not None:
            clauses.append("service = ?")
            params.append(service)
        if ongoing is not None:
            clauses.append("end_us IS NULL" if ongoing else "end_us IS NOT NULL")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        try:
            rows = self._conn.execute(
                f"SELECT body FROM events{where} ORDER BY start_us, id", params
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read events", exc) from None
        return [event_from_dict(json.loads(body)) for (body,) in rows]

    # -- Metadata ----------------------------------------------------------------

    def probe_id(self, configured: str | None) -> str:
        """The configured probe_id, else the one generated for this store on first use."""
        self._check_open()
        if configured:
            return configured
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'probe_id'").fetchone()
        if row is not None:
            return str(row[0])
        if self.readonly:
            raise self._fail("has no probe_id yet (opened read-only)")
        value = default_probe_id()
        try:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('probe_id', ?)", (value,)
            )
        except sqlite3.Error as exc:
            raise self._fail("cannot write the store", exc) from None
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'probe_id'").fetchone()
        return str(row[0])


def record_json(envelope: str, head: str, test_keys: str) -> str:
    """The full record JSON text from its three stored parts (no parsing: string joins)."""
    parts = [part for part in (envelope[1:-1], head[1:-1]) if part]
    parts.append('"test_keys":' + test_keys)
    return "{" + ",".join(parts) + "}"


def _assemble(
    envelope: Mapping[str, Any], head: Mapping[str, Any], test_keys: Any
) -> dict[str, Any]:
    """Envelope + head + test_keys, in :data:`FIELD_ORDER` (unknown fields last)."""
    merged: dict[str, Any] = {**envelope, **head, "test_keys": test_keys}
    record = {k: merged[k] for k in FIELD_ORDER if k in merged}
    for key, value in merged.items():
        if key not in record:
            record[key] = value
    return record


def _event_dict(event: Event) -> dict[str, Any]:
    data = dataclasses.asdict(event)
    data["evidence"] = list(event.evidence)
    return data


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Inverse of the stored event body (unknown keys are ignored)."""
    names = {f.name for f in dataclasses.fields(Event)}
    values = {k: v for k, v in data.items() if k in names}
    values["evidence"] = tuple(values.get("evidence") or ())
    return Event(**values)


def event_record(event: Event) -> dict[str, Any]:
    """An event as an export record: times as RFC 3339 text next to the fields."""
    from probe.core.records import format_time

    data = _event_dict(event)
    for key in ("start_time", "start_low", "start_high", "end_time", "end_low", "end_high"):
        value = data[key]
        data[key] = None if value is None else format_time(value)
    data["ongoing"] = event.ongoing
    return data

