"""Fleet events in the collector: the periodic job, the events table, the listing.

The detection is :mod:`probe.analysis.fleet_events` (pure). Here is the I/O around it:

* :class:`EventJob` runs once a minute in every collector process. Collectors are stateless
  and several may serve one database, so one of them at a time holds a PostgreSQL session
  advisory lock and runs the detector; the others only refresh their metrics. The holder keeps
  the detector in memory. When it takes the lock (first start, or another collector died) it
  first replays the last ``warmup`` seconds of measurements, so that its noise estimates and
  open events are back; events have deterministic ids, so replaying updates the same rows.
* New measurements are read by arrival (``received_at``, indexed), up to ``settle`` seconds
  before the database's clock, so that a batch still committing is read at the next run.
  Bins close on the data's own clock (the newest measurement read, minus the detector's
  ``lateness``): a backlog after an outage is processed in order; a single probe uploading
  later than that has its late measurements dropped (counted in the detector's ``late``).
* Events are upserted into ``fleet_events`` (migration 0002) and listed by
  ``probe collector events``, ``GET /api/v1/events`` and the collector's ``/metrics``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from probe.analysis.fleet_events import FleetDetector, FleetEvent, FleetParams, observation

log = logging.getLogger(__name__)

LOCK_EVENTS = 0x65766E74  # "evnt": one collector at a time runs the detector
FIELDS = ("id", "scope", "network", "cc", "asn", "service", "type", "start_time", "start_low", "start_high",
          "end_time", "end_low", "end_high", "probes", "reporting", "share", "detected_at", "updated_at")
_TIMES = {"start_time", "start_low", "start_high", "end_time", "end_low", "end_high", "detected_at", "updated_at"}
UPSERT = (
    f"INSERT INTO fleet_events ({', '.join(FIELDS)}) VALUES ({', '.join(['%s'] * len(FIELDS))})"
    " ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{f} = EXCLUDED.{f}" for f in FIELDS[1:])
)
NEW_ROWS = (
    "SELECT body, received_at, measurement_uid FROM measurements WHERE day >= %s"
    " AND (received_at, measurement_uid) > (%s, %s) AND received_at <= %s"
    " ORDER BY received_at, measurement_uid LIMIT %s"
)


def _stamp(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, tz=dt.UTC)


def upsert(conn: psycopg.Connection[Any], events: Iterable[FleetEvent]) -> int:
    rows = [tuple(_stamp(getattr(e, f)) if f in _TIMES else getattr(e, f) for f in FIELDS) for e in events]
    if rows:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(UPSERT, rows)
    return len(rows)


def list_events(conn: psycopg.Connection[Any] | Any, *, cc: str | None = None, asn: str | None = None,
                service: str | None = None, ongoing: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
    """Events as JSON-able dicts (times in RFC 3339), newest start first; ``asn`` filters the ASN events."""
    query, params = _list_query(cc, asn, service, ongoing, limit)
    return [_as_dict(row) for row in conn.execute(query.encode(), params).fetchall()]


async def list_events_async(conn: psycopg.AsyncConnection[Any], *, cc: str | None = None, asn: str | None = None,
                            service: str | None = None, ongoing: bool = False, ended_since: dt.datetime | None = None,
                            limit: int = 1000) -> list[dict[str, Any]]:
    """As :func:`list_events`; ``ended_since``: the ongoing events and those that ended since then."""
    query, params = _list_query(cc, asn, service, ongoing, limit, ended_since)
    cur = await conn.execute(query.encode(), params)
    return [_as_dict(row) for row in await cur.fetchall()]


def _list_query(cc: str | None, asn: str | None, service: str | None, ongoing: bool,
                limit: int, ended_since: dt.datetime | None = None) -> tuple[str, dict[str, Any]]:
    where = ["TRUE"]
    params: dict[str, Any] = {"limit": max(1, min(limit, 10_000))}
    for column, value in (("cc", cc), ("asn", asn), ("service", service)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    if ongoing:
        where.append("end_time IS NULL")
    if ended_since is not None:
        where.append("(end_time IS NULL OR end_time >= %(ended_since)s)")
        params["ended_since"] = ended_since
    query = (f"SELECT {', '.join(FIELDS)} FROM fleet_events WHERE {' AND '.join(where)}"
             " ORDER BY start_time DESC, id LIMIT %(limit)s")
    return query, params


def _as_dict(row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(FIELDS, row, strict=True):
        out[name] = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(value, dt.datetime) \
            else value
    out["ongoing"] = out["end_time"] is None
    return out


@dataclass(frozen=True)
class JobSettings:
    every_s: float = 60.0
    warmup_s: float = 24 * 3600.0
    settle_s: float = 5.0
    batch: int = 50_000  # rows read per query; a backlog takes several queries
    max_rows: int = 2_000_000  # per run: the rest waits for the next run
    params: FleetParams = FleetParams()


class EventJob:
    """One collector's share of the job (synchronous: the collector runs it in a thread)."""

    def __init__(self, dsn: str, settings: JobSettings = JobSettings()) -> None:
        self.dsn = dsn
        self.settings = settings
        self._conn: psycopg.Connection[Any] | None = None
        self._detector: FleetDetector | None = None
        self._cursor: tuple[dt.datetime, uuid.UUID] = (dt.datetime.min.replace(tzinfo=dt.UTC), uuid.UUID(int=0))
        self.holder = False

    @property
    def late(self) -> int:
        """Measurements dropped as too late by this holder's detector."""
        return self._detector.late if self._detector is not None else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._detector, self.holder = None, None, False

    def run_once(self) -> tuple[int, int]:
        """Take the lock if free, read what is new, update events: (measurements read, events changed).

        (0, 0) when another collector holds the lock."""
        try:
            return self._run()
        except psycopg.Error:
            self.close()  # the session (and the lock with it) is gone: start afresh next time
            raise

    def _run(self) -> tuple[int, int]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self.holder = False
        conn = self._conn
        if not self.holder:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_EVENTS,)).fetchone()
            if not (row and row[0]):
                return 0, 0
            self.holder = True
            now = self._now(conn)
            self._detector = FleetDetector(self.settings.params)
            self._cursor = (now - dt.timedelta(seconds=self.settings.warmup_s), uuid.UUID(int=0))
        detector = self._detector
        assert detector is not None
        now = self._now(conn)
        until = now - dt.timedelta(seconds=self.settings.settle_s)
        first_day = (min(self._cursor[0], now) - dt.timedelta(days=1)).date()
        read = 0
        while read < self.settings.max_rows:
            rows = conn.execute(NEW_ROWS, (first_day, *self._cursor, until, self.settings.batch)).fetchall()
            if not rows:
                break
            detector.feed(o for o in (observation(body) for body, _, _ in rows) if o is not None)
            read += len(rows)
            self._cursor = (rows[-1][1], rows[-1][2])
            if len(rows) < self.settings.batch:
                break
        # Bins close on the data's clock, not the wall's: after an outage of the collector (or of
        # every probe's uploads) the backlog is detected in order instead of dropped as late.
        changed = detector.advance(min(until.timestamp(), detector.newest)) if read else []
        upsert(conn, changed)
        return read, len(changed)

    @staticmethod
    def _now(conn: psycopg.Connection[Any]) -> dt.datetime:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        value: dt.datetime = row[0]
        return value
