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

Durability. :meth:`Store.append` buffers records and commits them in batches
(``batch_size`` records, or when the oldest buffered record is ``flush_seconds``
old, checked on each append); :meth:`Store.flush` commits what is buffered now.
Each commit is one transaction with ``synchronous=FULL``: a crash (kill -9, power
loss) loses at most what was not committed yet, never part of a transaction. The
daemon does not wait for a batch to fill: its writer thread commits every finished
target run at once, grouping the runs that finished while the previous commit
was syncing (group commit), and a run counts as done (metrics, events, logs) only
after its commit returned; so a kill -9 loses only the runs still in flight. Why
``FULL`` and not ``NORMAL``: in WAL mode ``NORMAL`` survives a process crash but
not a power loss, and with group commit ``FULL`` costs little. Measured
(``bench/store_durability.py``, docs/benchmarks.md): a commit per run does 15,700
records/s with ``FULL`` and 27,000 with ``NORMAL`` (752 and 5,800 on a busy disk); group
commit with ``FULL`` 43,900 (9,300 busy), against 46,900 (13,600 busy) for the old policy
(one commit per 500 records, which lost up to 227 finished runs per kill -9); the daemon
writes about 110 records/s at 5,000 checks/min.

Failures. A commit that fails (disk full, read-only file system, I/O error) is
rolled back whole and raises :class:`StoreError`, whose ``reason`` says which
(``disk_full``, ``read_only``, ...) and whose message names the path. The records
stay in the memory buffer and are written by a later flush, when space returns;
the automatic flushes of :meth:`Store.append` wait ``retry_seconds`` after a failure
so that a full disk is not hammered. The buffer is bounded (``buffer_bytes`` of stored text, 64 MiB by default:
about 50,000 typical records); an append that does not fit is refused whole with
:class:`StoreBufferFull` and counted in :attr:`Store.dropped`, nothing already
buffered is dropped. Envelope ids are cached only once their transaction committed,
and a cached id is checked against the table in the same transaction that uses it,
so a record never points to an envelope that does not exist (foreign keys are
enforced as well). With ``retry_open`` (the daemon) a store that cannot be opened
for writing (read-only or full file system) does not stop the caller: records are
buffered and every flush tries to open it again. Readers (``probe show``, ``probe
export``) skip records that reference a missing envelope (a store written by an
older probe on a full disk) and report them in :meth:`Store.damage`;
:meth:`Store.check` runs ``PRAGMA integrity_check`` and the foreign-key check.

Upload queue (issue 16): the store is the queue of measurements for the collector. The
cursor is ``meta['upload_seq']``, the ``seq`` of the last record acknowledged by the
collector (moved only after the acknowledgement, :meth:`set_meta`); :meth:`runs_after` reads
whole target runs behind it. With ``upload_bound_days`` set (upload on), retention keeps the
records not uploaded yet, up to that bound: older ones are deleted anyway and counted in
``meta['upload_expired']``.

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
import errno
import json
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict, Unpack

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


class Selection(TypedDict, total=False):
    """Which records a query reads: ``since`` inclusive, ``until`` exclusive (epoch seconds), and
    equality on the other columns. A key left out or None does not filter."""

    since: float | None
    until: float | None
    target: str | None
    service: str | None
    record_type: str | None
    test_name: str | None
#: Default bound of the memory buffer of records not yet committed (bytes of stored text).
BUFFER_BYTES = 64 * 1024 * 1024
#: Seconds an automatic flush waits after a failed commit before it tries again.
RETRY_SECONDS = 5.0
#: Why a store call failed: the ``reason`` label of ``probe_store_write_errors_total``.
REASONS: tuple[str, ...] = ("disk_full", "read_only", "io_error", "busy", "corrupt", "other")
#: The reasons that can go away without the operator touching the store file itself.
_TRANSIENT = frozenset({"disk_full", "read_only", "io_error", "busy"})
_CODES = {13: "disk_full", 8: "read_only", 10: "io_error", 5: "busy", 6: "busy", 11: "corrupt",
          26: "corrupt"}
_ERRNOS = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only",
           errno.EACCES: "read_only", errno.EPERM: "read_only", errno.EIO: "io_error"}
_HINTS = {
    "disk_full": "the disk is full",
    "read_only": "the store is read-only (read-only file system or no write permission)",
    "io_error": "the disk reported an I/O error",
    "busy": "another process holds the store locked",
    "corrupt": "the file is damaged (not a database, or corrupt)",
}

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
    """The store cannot be used (missing, corrupt, newer schema, disk error); names the path.

    ``reason`` is one of :data:`REASONS`; ``attempted`` is False when nothing was tried
    (a store that could not be opened, asked again before the next open).
    """

    def __init__(self, message: str, reason: str = "other", *, attempted: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempted = attempted


class StoreBufferFull(StoreError):
    """An append refused because the memory buffer of uncommitted records is full (counted)."""


def error_reason(exc: BaseException, path: Path | None = None) -> str:
    """The :data:`REASONS` entry for an SQLite or OS error (``path``: the store, to tell a
    read-only file system from a file SQLite merely cannot open)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            reason = _CODES.get(code & 0xFF)
            if code & 0xFF in (10, 14) and path is not None:  # SQLITE_IOERR, SQLITE_CANTOPEN: why?
                if _no_space(path):
                    return "disk_full"
                if not _writable_dir(path):
                    return "read_only"
            if reason is not None:
                return reason
        text = str(exc)
        if "disk is full" in text:
            return "disk_full"
        if "readonly" in text or "read-only" in text:
            return "read_only"
        if "malformed" in text or "not a database" in text:
            return "corrupt"
    if isinstance(exc, OSError) and exc.errno in _ERRNOS:
        return _ERRNOS[exc.errno]
    return "other"


def _no_space(path: Path) -> bool:
    """The file system of ``path`` has no block left for us (SQLite then often says "I/O error")."""
    try:
        stat = os.statvfs(path.parent if str(path.parent) else ".")
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 64 * 1024


def _writable_dir(path: Path) -> bool:
    directory = path.parent if str(path.parent) else Path(".")
    return os.access(directory, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


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


def _row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """One record as the stored row (its envelope as JSON text in place of the envelope id)."""
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
    return (
        record["id"], t_us, envelope, record["target"], record["service"],
        record["record_type"], record["test_name"], head, test_keys,
    )


def _row_bytes(row: tuple[Any, ...]) -> int:
    """The stored text of a row (what the buffer bound counts; the tuple adds ~0.5 KB)."""
    return len(row[2]) + len(row[7]) + len(row[8]) + 512


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open: SQLite may already have rolled it back itself
    (SQLITE_FULL does), and a failing ROLLBACK must never hide the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


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
    for flush ages, retries and retention; tests inject it. ``buffer_bytes`` bounds
    the records kept in memory while they cannot be committed; ``retry_open`` keeps
    a writable store usable when its file cannot be opened yet (see the module
    docstring).
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
        buffer_bytes: int = BUFFER_BYTES,
        retry_seconds: float = RETRY_SECONDS,
        retry_open: bool = False,
        upload_bound_days: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = Path(path)
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.readonly = readonly
        self.clock = clock
        self.buffer_bytes = buffer_bytes
        self.retry_seconds = retry_seconds
        self.upload_bound_days = upload_bound_days
        self._buffer: list[tuple[Any, ...]] = []
        self._buffered_bytes = 0
        self._buffer_since = 0.0
        self._envelope_ids: dict[str, int] = {}
        self._envelope_texts: dict[int, str] = {}
        #: envelope ids that records point to but that do not exist (found while reading)
        self.missing_envelopes: set[int] = set()
        #: records refused because the buffer was full (lost, counted)
        self.dropped = 0
        #: records skipped while reading because their envelope is missing
        self.orphans_skipped = 0
        #: the last failed commit or open (None once a commit succeeded)
        self.last_error: StoreError | None = None
        self._retry_at = 0.0
        self._closed = False
        self._last_prune = clock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except StoreError as exc:
            if not (retry_open and not readonly and exc.reason in _TRANSIENT):
                raise
            self._failed(exc)
            return
        if not readonly and retention_days is not None:
            self._prune_quietly()

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (for inspection and tests; write through the methods)."""
        return self._connection()

    @property
    def buffered(self) -> int:
        """Records appended and not committed yet."""
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        """Their stored text, in bytes (what ``buffer_bytes`` bounds)."""
        return self._buffered_bytes

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.last_error is not None:
                raise StoreError(str(self.last_error), self.last_error.reason, attempted=False)
            raise self._fail("the store is not open")
        return self._conn

    # -- Opening -----------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException | None = None, reason: str | None = None) -> StoreError:
        if reason is None:
            reason = "other" if exc is None else error_reason(exc, self.path)
        detail = f": {exc}" if exc is not None else ""
        hint = f" ({_HINTS[reason]})" if reason in _HINTS and what != _HINTS[reason] else ""
        return StoreError(f"{self.path}: {what}{hint}{detail}", reason)

    def _open(self) -> sqlite3.Connection:
        if self.readonly and not self.path.is_file():
            raise self._fail("no such store (run `probe run` first, or pass --store)")
        if not self.readonly and self.path.exists() and not self.path.is_file():
            raise self._fail("is not a file")
        try:
            if self.readonly:
                conn = self._connect_readonly()
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
            if not self.readonly:
                conn.execute("PRAGMA foreign_keys = ON")
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            reason = error_reason(exc, self.path)
            what = ("cannot open the store" if reason in _TRANSIENT
                    else "not a usable SQLite store (not a database, or corrupt)")
            raise self._fail(what, exc, reason) from None
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        """Read-only; where SQLite cannot create the WAL index (a read-only or full file system,
        so no writer has the file open in WAL mode) the file is opened as immutable."""
        uri = f"file:{self.path.resolve()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            if _writable_dir(self.path) and not _no_space(self.path):
                raise
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
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
            _rollback(conn)
            raise

    def _failed(self, exc: StoreError) -> None:
        self.last_error = exc
        self._retry_at = self.clock() + self.retry_seconds
        if exc.reason in ("read_only", "io_error") and self._conn is not None and not self.readonly:
            # SQLite may have opened the file read-only (or lost it): the next try opens it afresh,
            # so that a file system remounted read-write is written again
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # -- Lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush what is buffered and close; calling it again does nothing.

        Raises :class:`StoreError` when buffered records could not be committed (they are
        lost then: the message says how many).
        """
        if self._closed:
            return
        try:
            if not self.readonly and self._buffer:
                try:
                    self.flush()
                except StoreError as exc:
                    raise StoreError(f"{exc}; {len(self._buffer)} buffered record(s) not written",
                                     exc.reason) from None
        finally:
            self._closed = True
            if self._conn is not None:
                self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise self._fail("the store is closed")

    # -- Records -----------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Buffer records; commit when the batch is full or old enough.

        All or nothing per call: a record that lacks a required field raises
        ValueError before any record of the call is buffered, and a call that does
        not fit in the buffer while commits fail is refused whole
        (:class:`StoreBufferFull`, counted in :attr:`dropped`). When the commit that
        an append triggers fails, its :class:`StoreError` is raised but every record
        stays buffered for the next flush. A record whose ``id`` is already stored
        is ignored (appending twice is harmless).
        """
        self._check_open()
        if self.readonly:
            raise self._fail("opened read-only")
        rows = [_row(record) for record in records]
        if not rows:
            return
        size = sum(_row_bytes(row) for row in rows)
        if self._buffer and self._buffered_bytes + size > self.buffer_bytes:
            with contextlib.suppress(StoreError):
                self.flush()  # make room if the store takes writes again
            if self._buffer and self._buffered_bytes + size > self.buffer_bytes:
                self.dropped += len(rows)
                cause = f": {self.last_error}" if self.last_error is not None else ""
                raise StoreBufferFull(
                    f"{self.path}: {len(rows)} record(s) dropped: the buffer of uncommitted records "
                    f"is full ({self._buffered_bytes} of {self.buffer_bytes} bytes){cause}",
                    self.last_error.reason if self.last_error is not None else "other",
                )
        if not self._buffer:
            self._buffer_since = self.clock()
        self._buffer.extend(rows)
        self._buffered_bytes += size
        due = len(self._buffer) >= self.batch_size or self.clock() - self._buffer_since >= self.flush_seconds
        if due and (self.last_error is None or self.clock() >= self._retry_at):  # no retry storm
            self.flush()

    def flush(self) -> None:
        """Commit the buffered records as one transaction.

        On failure the transaction is rolled back whole, the records stay buffered and
        :class:`StoreError` says why and where.
        """
        self._check_open()
        if not self._buffer:
            return
        try:
            self._commit(self._buffer)
        except StoreError as exc:
            self._failed(exc)
            raise
        self.last_error = None
        self._buffer = []
        self._buffered_bytes = 0
        if self.retention_days is not None and self.clock() - self._last_prune >= _PRUNE_EVERY:
            self._prune_quietly()

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back whole on any error);
        an SQLite error becomes a StoreError saying ``what`` failed."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise self._fail(what, exc) from None

    def _commit(self, rows: list[tuple[Any, ...]]) -> None:
        if self._conn is None:
            self._conn = self._open()
        staged: dict[str, int] = {}
        with self._transaction("cannot write the store") as conn:
            ids = self._envelope_rows(rows, staged)
            conn.executemany(
                "INSERT OR IGNORE INTO records (id, t_us, eid, target, service, record_type,"
                " test_name, head, test_keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r[0], r[1], ids[r[2]], *r[3:]) for r in rows],
            )
        if len(self._envelope_ids) > 10_000:
            self._envelope_ids.clear()
        self._envelope_ids.update(staged)  # only ids whose insert committed

    def _envelope_rows(self, rows: list[tuple[Any, ...]], staged: dict[str, int]) -> dict[str, int]:
        """Each envelope's id, inserting the new ones (in the open transaction); a cached id is
        checked by its update, so an envelope deleted meanwhile (retention, another process) is
        inserted again instead of being pointed to."""
        newest: dict[str, int] = {}
        for row in rows:
            if row[1] > newest.get(row[2], -(1 << 62)):
                newest[row[2]] = row[1]
        ids: dict[str, int] = {}
        for fields, last_us in newest.items():
            eid = self._envelope_ids.get(fields)
            if eid is not None and self._connection().execute(
                "UPDATE envelopes SET last_us = max(last_us, ?) WHERE eid = ? AND fields = ?",
                (last_us, eid, fields),
            ).rowcount == 1:
                ids[fields] = eid
                continue
            row = self._connection().execute(
                "INSERT INTO envelopes (fields, last_us) VALUES (?, ?) "
                "ON CONFLICT (fields) DO UPDATE SET last_us = max(last_us, excluded.last_us) "
                "RETURNING eid",
                (fields, last_us),
            ).fetchone()
            ids[fields] = staged[fields] = int(row[0])
        return ids

    def _select(
        self, columns: str, limit: int | None, newest_first: bool, where: Selection
    ) -> sqlite3.Cursor:
        self._check_open()
        if not self.readonly:
            with contextlib.suppress(StoreError):  # reads show what is committed
                self.flush()
        if unknown := where.keys() - Selection.__annotations__.keys():
            raise TypeError(f"unknown record filter(s): {', '.join(sorted(unknown))}")
        clauses: list[str] = []
        params: list[Any] = []
        for at, op in ((where.get("since"), ">="), (where.get("until"), "<")):
            if at is not None:
                clauses.append(f"r.t_us {op} ?")
                params.append(seconds_to_us(at))
        for column in ("target", "service", "record_type", "test_name"):
            if (value := where.get(column)) is not None:
                clauses.append(f"r.{column} = ?")
                params.append(value)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {columns} FROM records r"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY r.t_us {order}, r.seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        try:
            return self._connection().execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None

    def _batches(
        self, cursor: sqlite3.Cursor, size: int, eid_at: int
    ) -> Iterator[tuple[list[Any], dict[int, str]]]:
        """Rows in batches with the envelope texts they need; rows whose envelope is missing are
        skipped and counted (:meth:`damage`), never a KeyError. Read errors become StoreError."""
        try:
            while rows := cursor.fetchmany(size):
                texts = self.envelopes({row[eid_at] for row in rows})
                if len(texts) < len({row[eid_at] for row in rows}):
                    kept = [row for row in rows if row[eid_at] in texts]
                    self.orphans_skipped += len(rows) - len(kept)
                    rows = kept
                yield rows, texts
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # store closed first
                cursor.close()

    def query(
        self,
        *,
        limit: int | None = None,
        newest_first: bool = False,
        **where: Unpack[Selection],
    ) -> Iterator[dict[str, Any]]:
        """Records as dicts, oldest first (``since`` inclusive, ``until`` exclusive, epoch s).

        Streams: rows are fetched in small batches, so memory stays constant
        whatever the number of matching records.
        """
        cursor = self._select("r.eid, r.head, r.test_keys", limit, newest_first, where)
        envelopes: dict[int, dict[str, Any]] = {}
        for rows, texts in self._batches(cursor, _FETCH, 0):
            if len(envelopes) > 1000:
                envelopes.clear()
            envelopes.update((eid, json.loads(text)) for eid, text in texts.items()
                             if eid not in envelopes)
            for eid, head, test_keys in rows:
                yield _assemble(envelopes[eid], json.loads(head), json.loads(test_keys))

    def query_json(
        self,
        *,
        limit: int | None = None,
        newest_first: bool = False,
        **where: Unpack[Selection],
    ) -> Iterator[str]:
        """The same as :meth:`query`, as JSON text per record, without parsing (for exports)."""
        cursor = self._select("r.eid, r.head, r.test_keys", limit, newest_first, where)
        for rows, texts in self._batches(cursor, _FETCH, 0):
            for eid, head, test_keys in rows:
                yield record_json(texts[eid], head, test_keys)

    def query_raw(
        self,
        *,
        batch: int = 50_000,
        **where: Unpack[Selection],
    ) -> Generator[list[tuple[int, int, str, str]], None, None]:
        """Batches of ``(t_us, eid, head, test_keys)`` rows, oldest first, unparsed.

        For exporters: envelope texts come from :meth:`envelopes` (every row's envelope exists).
        """
        cursor = self._select("r.t_us, r.eid, r.head, r.test_keys", None, False, where)
        for rows, _ in self._batches(cursor, batch, 1):
            if rows:
                yield rows

    def envelopes(self, eids: Iterable[int]) -> dict[int, str]:
        """The envelope JSON text of each given envelope id that exists (a missing one is
        left out and noted for :meth:`damage`)."""
        eids = list(eids)
        if len(self._envelope_texts) > 10_000:
            self._envelope_texts.clear()
        wanted = [eid for eid in set(eids) if eid not in self._envelope_texts]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._connection().execute(
                f"SELECT eid, fields FROM envelopes WHERE eid IN ({marks})", chunk
            ).fetchall()
            self._envelope_texts.update(rows)
            self.missing_envelopes.update(set(chunk) - {eid for eid, _ in rows})
        return {eid: self._envelope_texts[eid] for eid in eids if eid in self._envelope_texts}

    def damage(self) -> list[str]:
        """What reads so far found wrong with the store (empty when nothing), one line each."""
        if not self.missing_envelopes:
            return []
        missing = sorted(self.missing_envelopes)
        try:
            count = sum(
                self._connection().execute(
                    f"SELECT count(*) FROM records WHERE eid IN ({','.join('?' * len(chunk))})", chunk
                ).fetchone()[0]
                for chunk in (missing[k : k + 500] for k in range(0, len(missing), 500))
            )
        except sqlite3.DatabaseError as exc:
            return [str(self._fail("cannot read the store", exc))]
        ids = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        return [f"store {self.path}: {count} record(s) reference a missing envelope (envelope id(s) {ids}); "
                "they were left out"]

    def check(self) -> list[str]:
        """``PRAGMA integrity_check`` and the foreign-key check: problems, one line each (empty: clean)."""
        self._check_open()
        conn = self._connection()
        try:
            problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
            if problems == ["ok"]:
                problems = []
            orphans = conn.execute(
                "SELECT count(*) FROM records WHERE eid NOT IN (SELECT eid FROM envelopes)"
            ).fetchone()[0]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return [str(self._fail("cannot check the store", exc))]
        if orphans:
            problems.append(f"{orphans} record(s) reference a missing envelope")
        if fk and not orphans:
            problems.append(f"{len(fk)} foreign-key violation(s)")
        return [f"store {self.path}: {p}" for p in problems]

    def count(self) -> int:
        """Number of stored records (flushes first; buffered records that cannot be written
        are not counted)."""
        self._check_open()
        if not self.readonly:
            with contextlib.suppress(StoreError):
                self.flush()
        return int(self._connection().execute("SELECT count(*) FROM records").fetchone()[0])

    def _prune_quietly(self) -> None:
        """Retention on open and on flushes; a failure (a full disk) must not stop writes."""
        try:
            self.prune()
        except StoreError as exc:
            self._last_prune = self.clock()
            self._failed(exc)

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
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self.upload_bound_days is None:
                    deleted = conn.execute("DELETE FROM records WHERE t_us < ?", (cutoff,)).rowcount
                    conn.execute("DELETE FROM envelopes WHERE last_us < ?", (cutoff,))
                else:
                    deleted = self._prune_uploaded(conn, cutoff, now)
                conn.execute(
                    "DELETE FROM events WHERE end_us IS NOT NULL AND end_us < ?", (cutoff,)
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._envelope_ids.clear()
            self._envelope_texts.clear()
            if deleted:
                conn.executescript("PRAGMA incremental_vacuum")  # execute() frees one page only
        except sqlite3.Error as exc:
            raise self._fail("cannot prune the store", exc) from None
        return int(deleted)

    def _prune_uploaded(self, conn: sqlite3.Connection, cutoff: int, now: float) -> int:
        """Retention with upload on: records past the cursor stay, unless older than the bound."""
        assert self.upload_bound_days is not None
        row = conn.execute("SELECT value FROM meta WHERE key = 'upload_seq'").fetchone()
        cursor = int(row[0]) if row else 0
        bound = seconds_to_us(now - self.upload_bound_days * 86400.0)
        deleted = conn.execute("DELETE FROM records WHERE t_us < ? AND seq <= ?", (cutoff, cursor)).rowcount
        expired = conn.execute(
            "SELECT count(*) FROM records WHERE t_us < ? AND t_us < ? AND seq > ? AND record_type = 'verdict'",
            (cutoff, bound, cursor)).fetchone()[0]
        deleted += conn.execute("DELETE FROM records WHERE t_us < ? AND t_us < ? AND seq > ?",
                                (cutoff, bound, cursor)).rowcount
        conn.execute("DELETE FROM envelopes WHERE last_us < ? AND eid NOT IN"
                     " (SELECT eid FROM records WHERE seq > ?)", (cutoff, cursor))  # the pending ones' stay
        if expired:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('upload_expired', ?) ON CONFLICT (key) DO UPDATE"
                " SET value = CAST(CAST(value AS INTEGER) + excluded.value AS TEXT)", (str(expired),))
        return int(deleted)

    # -- Upload queue --------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A metadata value (``upload_seq``, ``upload_status``, ...), or None."""
        self._check_open()
        try:
            row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None
        return None if row is None else str(row[0])

    def set_meta(self, items: Mapping[str, str | None]) -> None:
        """Set (None: delete) metadata values, in one durable transaction."""
        self._check_open()
        if self.readonly:
            raise self._fail("opened read-only")
        with self._transaction("cannot write the store") as conn:
            for key, value in items.items():
                if value is None:
                    conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                                 " DO UPDATE SET value = excluded.value", (key, value))

    def upload_cursor(self) -> int:
        """The ``seq`` of the last record the collector acknowledged (0: none)."""
        value = self.meta("upload_seq")
        return int(value) if value else 0

    def pending_runs(self, after: int | None = None) -> int:
        """Target runs (verdict records) behind the upload cursor."""
        cursor = self.upload_cursor() if after is None else after
        try:
            row = self._connection().execute(
                "SELECT count(*) FROM records WHERE seq > ? AND record_type = 'verdict'", (cursor,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._fail("cannot read the store", exc) from None
        return int(row[0])

    def runs_after(self, seq: int, limit: int) -> list[tuple[int, list[dict[str, Any]]]]:
        """Up to ``limit`` committed target runs whose records follow ``seq``, in commit order:
        (the seq of the run's last record, its records). A run is committed whole (the daemon's
        writer commits each finished run in one transaction), so it is contiguous in ``seq``,
        its checks then its verdict (:meth:`probe.pipeline.Outcome.records`);
        a run never comes cut: the last one read is left for later unless the read reached the
        end. A group without a verdict (an interrupted run) comes with an empty list of records,
        so that the cursor can pass it."""
        self._check_open()
        out: list[tuple[int, list[dict[str, Any]]]] = []
        window = max(64, limit * 16)
        while True:
            try:
                rows = self._connection().execute(
                    "SELECT seq, record FROM records_json WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, window)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._fail("cannot read the store", exc) from None
            groups: list[tuple[int, list[dict[str, Any]]]] = []
            key: tuple[Any, ...] | None = None
            verdict = False
            for row_seq, text in rows:
                record = json.loads(text)
                is_verdict = record.get("record_type") == "verdict"
                keys = record.get("test_keys") or {}
                this = (record.get("report_id"), record.get("target"), keys.get("retest_of"), keys.get("retest"))
                if groups and this == key and not verdict:  # a run's records: its checks, then its verdict
                    groups[-1][1].append(record)
                    groups[-1] = (row_seq, groups[-1][1])
                    verdict = verdict or is_verdict
                else:
                    groups.append((row_seq, [record]))
                    key, verdict = this, is_verdict
            if len(rows) == window and groups:
                groups.pop()  # may be cut by the window
                if not groups:
                    window *= 4
                    continue
            for last, records in groups:
                has_verdict = any(r.get("record_type") == "verdict" for r in records)
                out.append((last, records if has_verdict else []))
                if len(out) >= limit:
                    return out
            return out

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
        conn = self._connection()
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
                _rollback(conn)
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
            rows = self._connection().execute(
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
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'probe_id'").fetchone()
        if row is not None:
            return str(row[0])
        if self.readonly:
            raise self._fail("has no probe_id yet (opened read-only)")
        value = default_probe_id()
        try:
            self._connection().execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('probe_id', ?)", (value,)
            )
        except sqlite3.Error as exc:
            raise self._fail("cannot write the store", exc) from None
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'probe_id'").fetchone()
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

