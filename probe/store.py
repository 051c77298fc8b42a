"""The local store: SQLite in WAL mode, append-only, committed in batches.

Records are the dicts of :mod:`probe.records`. Each is kept whole as JSON, with
the columns that queries filter on (time, target, service, record type, test
name) beside it and indexed. ``append`` buffers; a batch is committed when it is
full or old enough, in one transaction, so a crash loses at most the batch not
yet committed and never leaves half a batch. ``query`` streams with
``fetchmany`` so that exports run in constant memory.

Retention: records older than ``retention_days`` are deleted at open and then
at most once an hour, so the file stays bounded.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from probe.records import Event, default_probe_id, parse_time

SCHEMA_VERSION = 1
FETCH = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    t REAL NOT NULL,
    record_type TEXT NOT NULL,
    test_name TEXT NOT NULL,
    target TEXT NOT NULL,
    service TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_t ON records (t);
CREATE INDEX IF NOT EXISTS records_target_t ON records (target, t);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_start ON events (start_time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the path."""


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: int = 90,
        batch_size: int = 500,
        flush_seconds: float = 2.0,
        clock: Any = time.time,
    ) -> None:
        self.path = str(path)
        self.retention = retention_days * 86400.0
        self.batch_size, self.flush_seconds, self.clock = batch_size, flush_seconds, clock
        self._pending: list[tuple[str, float, str, str, str, str, str]] = []
        self._oldest_pending = 0.0
        self._last_prune = 0.0
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {version} is newer than this probe's "
                    f"({SCHEMA_VERSION}); upgrade probe"
                )
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite store: {exc}") from None
        self.prune()

    # -- writing -------------------------------------------------------------------

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            if not self._pending:
                self._oldest_pending = self.clock()
            self._pending.append((
                r["id"], parse_time(r["measurement_start_time"]), r["record_type"], r["test_name"],
                r["target"], r["service"], json.dumps(r, ensure_ascii=False, separators=(",", ":")),
            ))
            if len(self._pending) >= self.batch_size:
                self.flush()
        if self._pending and self.clock() - self._oldest_pending >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered, atomically."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            with self._transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO records (id, t, record_type, test_name, target, service, json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    batch,
                )
        except sqlite3.Error as exc:
            self._pending = batch + self._pending  # keep them for the next try
            raise StoreError(f"{self.path}: cannot write: {exc}") from exc
        if self.clock() - self._last_prune > 3600:
            self.prune()

    def _transaction(self) -> Any:
        db = self.db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind: object, *rest: object) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def prune(self) -> int:
        """Delete records (and finished events) older than the retention; returns how many records."""
        now = self.clock()
        self._last_prune = now
        cutoff = now - self.retention
        with self._transaction():
            deleted = self.db.execute("DELETE FROM records WHERE t < ?", (cutoff,)).rowcount
            self.db.execute("DELETE FROM events WHERE end_time IS NOT NULL AND end_time < ?", (cutoff,))
        return int(deleted)

    def close(self) -> None:
        if getattr(self, "db", None) is None:
            return
        try:
            self.flush()
        finally:
            self.db.close()
            self.db = None  # type: ignore[assignment]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        target: str | None = None,
        service: str | None = None,
        record_type: str | None = None,
        test_name: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records matching every given filter, streamed in time order."""
        for raw in self.query_json(since=since, until=until, target=target, service=service,
                                   record_type=record_type, test_name=test_name, limit=limit,
                                   newest_first=newest_first):
            yield json.loads(raw)

    def query_json(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        target: str | None = None,
        service: str | None = None,
        record_type: str | None = None,
        test_name: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[str]:
        """The same as :meth:`query`, as raw JSON text (cheaper for exports)."""
        self.flush()
        where: list[str] = []
        args: list[object] = []
        for column, op, value in (
            ("t", ">=", since), ("t", "<", until), ("target", "=", target), ("service", "=", service),
            ("record_type", "=", record_type), ("test_name", "=", test_name),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = "SELECT json FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t DESC, seq DESC" if newest_first else " ORDER BY t, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self.db.execute(sql, args)
        while rows := cursor.fetchmany(FETCH):
            for (raw,) in rows:
                yield raw

    def count(self) -> int:
        self.flush()
        return int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])

    # -- events and identity ---------------------------------------------------------

    def save_events(self, events: Iterable[Event]) -> None:
        rows = [(e.id, e.target, e.start_time, e.end_time, json.dumps(_event_dict(e))) for e in events]
        with self._transaction():
            self.db.executemany(
                "INSERT INTO events (id, target, start_time, end_time, json) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET end_time=excluded.end_time, json=excluded.json",
                rows,
            )

    def events(
        self, *, since: float | None = None, target: str | None = None, ongoing: bool | None = None
    ) -> list[Event]:
        sql, args = "SELECT json FROM events WHERE 1=1", list[object]()
        if since is not None:
            sql += " AND (end_time IS NULL OR end_time >= ?)"
            args.append(since)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        if ongoing is not None:
            sql += " AND end_time IS NULL" if ongoing else " AND end_time IS NOT NULL"
        sql += " ORDER BY start_time"
        return [_event_from(json.loads(raw)) for (raw,) in self.db.execute(sql, args)]

    def probe_id(self, configured: str | None) -> str:
        """The configured id, else the one generated at first use and kept here."""
        if configured:
            return configured
        row = self.db.execute("SELECT value FROM meta WHERE key = 'probe_id'").fetchone()
        if row:
            return str(row[0])
        new = default_probe_id()
        self.db.execute("INSERT INTO meta (key, value) VALUES ('probe_id', ?)", (new,))
        return new


def _event_dict(event: Event) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(event)
    data["evidence"] = list(event.evidence)
    return data


def _event_from(data: dict[str, Any]) -> Event:
    data["evidence"] = tuple(data.get("evidence", ()))
    return Event(**data)
