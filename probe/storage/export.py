"""Dataset export: the store's records (or events) as JSONL, CSV or Parquet, streamed.

Formats (every one holds one OONI measurement per target run, :mod:`probe.core.ooni`, built
from the run's records by :mod:`probe.analysis.ooni`; a run is in the range when it started, its
verdict's time, in it):

* ``jsonl``: one measurement per line, as OONI writes them; OONI's reader (``oonidata``) loads it.
* ``parquet``: one row per measurement (:data:`MEASUREMENT_SCHEMA`): typed scalar columns
  (``measurement_start_time`` a ``timestamp[us, UTC]``, ``accessible`` a boolean, ...), the OONI
  templates and our lists/objects as JSON columns (Arrow's ``arrow.json`` extension, Parquet
  logical type JSON; DuckDB reads them as ``JSON``); a directory partitioned hive-style by the
  UTC date of the measurement (``date=YYYY-MM-DD/part-0.parquet``). JSON, not structs: a
  template entry's shape differs per check and grows with the checks.
* ``csv``: the same columns, JSON as text.

Streaming: records are read from the store in order and grouped into runs; each batch of
``batch`` (2,000) measurements becomes one Parquet row group (per date) or one CSV block, so
memory is bounded by the batch, not by the export. With ``workers`` > 1, a large range is cut
into time slices converted by worker processes (:func:`_slices`).

Safety: an export is written under a temporary name in the destination's
directory and renamed into place only when complete; on any error the
temporary file (or directory) is removed. Exports never contain a field named
in :data:`probe.storage.store.FORBIDDEN_KEYS` (``probe_ip``, ``client_ip``): the store
strips them on append, and the exporter checks again (the JSONL's OONI ``probe_ip`` is always
the scrubbed ``127.0.0.1``; the flat formats leave it out).
"""

from __future__ import annotations

import csv
import gc
import itertools
import json
import multiprocessing
import operator
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from probe.analysis.ooni import OONI_TIME, RUN_HORIZON, group_runs, measurement
from probe.core import ooni, records
from probe.storage.store import (
    FORBIDDEN_KEYS,
    Store,
    event_record,
    mentions_forbidden,
    seconds_to_us,
    strip_forbidden,
    time_us,
)

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
#: Measurements per batch: a Parquet row group (per date), a CSV block.
BATCH = 2_000
#: Stored records read from SQLite at a time.
_READ = 5_000
_DAY_US = 86_400_000_000

TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON = pa.json_(pa.string())

#: Columns of a measurement in CSV and Parquet: one row per OONI measurement (one per target
#: run), every field of the measurement (docs/records.md, "CSV and Parquet"). Scalars are typed
#: columns; the OONI templates, our lists and objects are JSON (Parquet logical type JSON, which
#: DuckDB reads as ``JSON``; plain JSON text in CSV). ``measurement_start_time`` is the exact
#: start (µs; the JSONL holds it whole-second at top level and exact in ``test_keys.start_time``).
#: ``probe_ip`` is left out: it is always OONI's scrubbed ``127.0.0.1`` (and never the address).
_MEASUREMENT_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    # (column names, type, where the value is: "m" the measurement, "k" its test_keys, or a rule)
    ("measurement_uid report_id", pa.string(), "m"),
    ("measurement_start_time", TIMESTAMP, "start"),
    ("test_start_time", TIMESTAMP, "ooni_time"),
    ("test_name test_version", pa.string(), "m"),
    ("test_runtime", pa.float64(), "m"),
    ("input", pa.string(), "m"),
    ("probe_id", pa.string(), "probe_id"),
    ("probe_cc probe_asn probe_network_name resolver_ip resolver_asn resolver_network_name software_name "
     "software_version data_format_version", pa.string(), "m"),
    ("target service category", pa.string(), "k"),
    ("accessible", pa.bool_(), "k"),
    ("blocking", pa.string(), "blocking"),
    ("rule reason failure failed_operation agent socksproxy run_id verdict_id retest_of", pa.string(), "k"),
    ("retest", pa.int64(), "k"),
    ("evidence queries tcp_connect tls_handshakes requests network_events throttling diagnostics "
     "verdict_details checks", JSON, "k"),
    ("annotations extensions test_helpers", JSON, "m"),
)
MEASUREMENT_SCHEMA = pa.schema(
    [(name, kind) for names, kind, _ in _MEASUREMENT_COLUMNS for name in names.split()]
)

#: Columns of an event in CSV and Parquet.
EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("probe_id", pa.string()),
        ("target", pa.string()),
        ("service", pa.string()),
        ("check", pa.string()),
        ("type", pa.string()),
        ("start_time", TIMESTAMP),
        ("start_low", TIMESTAMP),
        ("start_high", TIMESTAMP),
        ("end_time", TIMESTAMP),
        ("end_low", TIMESTAMP),
        ("end_high", TIMESTAMP),
        ("confidence", pa.float64()),
        ("ongoing", pa.bool_()),
        ("evidence", pa.list_(pa.string())),
    ]
)
_TEXT_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string()) if f.type == JSON else f for f in MEASUREMENT_SCHEMA]
)
_ENCODE = msgspec.json.Encoder().encode
_EVENT_TIMES = ("start_time", "start_low", "start_high", "end_time", "end_low", "end_high")


class ExportError(Exception):
    """Bad export arguments or an unwritable destination (the CLI exits 2)."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: Path
    format: str
    rows: int
    files: int
    seconds: float


# -- Arguments -------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_when(text: str, now: float | None = None, flag: str = "--since") -> float:
    """``2026-04-16``, an RFC 3339 time (UTC unless it says otherwise) or ``90m``/``24h``/``7d``
    ago, as epoch seconds. Raises :class:`ExportError` naming the flag and the value."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        now = time.time() if now is None else now
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return records.parse_time(value)
    except ValueError:
        raise ExportError(
            f"{flag} {text!r}: not a time (use 2026-04-16, 2026-04-16T06:10:00Z, or 30m, 24h, 7d)"
        ) from None


def check_range(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ExportError(
            f"--since {records.format_time(since)} is not before --until "
            f"{records.format_time(until)}: the time range is empty"
        )


# -- Atomic destination --------------------------------------------------------------


class _Destination:
    """A temporary sibling of ``out`` that becomes ``out`` only on success."""

    def __init__(self, out: Path, directory: bool) -> None:
        self.out = out
        self.directory = directory
        parent = out.parent
        if not parent.is_dir():
            raise ExportError(f"--out {out}: directory {parent} does not exist")
        if out.exists():
            if directory and (not out.is_dir() or any(out.iterdir())):
                raise ExportError(
                    f"--out {out}: already exists and is not an empty directory "
                    "(Parquet output is a directory; choose a new path)"
                )
            if not directory and out.is_dir():
                raise ExportError(f"--out {out}: is a directory")
        self.tmp = parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            if directory:
                self.tmp.mkdir()
            else:
                self.tmp.touch(exist_ok=False)
        except OSError as exc:
            raise ExportError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None

    def commit(self) -> None:
        try:
            if self.directory:
                if self.out.is_dir():
                    self.out.rmdir()  # empty, checked above
                self.tmp.rename(self.out)
            else:
                os.replace(self.tmp, self.out)
        except OSError as exc:
            raise ExportError(f"--out {self.out}: cannot write there: {exc.strerror or exc}") from None

    def discard(self) -> None:
        if self.directory:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


# -- Entry point -------------------------------------------------------------------


def export(
    store: Store,
    fmt: str,
    out: str | Path,
    *,
    since: float | None = None,
    until: float | None = None,
    target: str | None = None,
    service: str | None = None,
    events: bool = False,
    batch: int = BATCH,
    workers: int = 1,
) -> ExportSummary:
    """Write the matching measurements (or events) to ``out``; all or nothing.

    ``workers``: processes converting records to measurements when the range holds at least
    :data:`PARALLEL_MIN` records. Each holds its own batch, so memory grows with them; the
    default, one, keeps the export in the memory of one batch.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown format (one of: {', '.join(FORMATS)})")
    check_range(since, until)
    if batch < 1:
        raise ExportError("batch must be at least 1")
    started = time.perf_counter()
    dest = _Destination(Path(out), directory=fmt == "parquet")
    previous_pool = pa.default_memory_pool()
    # The system allocator returns freed batches to the OS; Arrow's default
    # (mimalloc) keeps them, which costs ~100 MB of peak RSS on a large export.
    pa.set_memory_pool(pa.system_memory_pool())
    # Records and measurements form no reference cycles, and a batch holds millions of objects:
    # the cyclic collector would walk them again and again (it doubled the export's CPU time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if events:
            rows, files = _export_events(store, fmt, dest.tmp, since, until, target, service)
        else:
            cuts = _slices(store, since, until, workers)
            if len(cuts) > 1:
                rows, files = _write_parallel(store, fmt, dest.tmp, cuts, target, service, batch)
            else:
                found = _measurements(store, since, until, target, service)
                rows, files = _write(fmt, found, dest.tmp, batch)
        dest.commit()
    except BaseException:
        dest.discard()
        raise
    finally:
        pa.set_memory_pool(previous_pool)
        if collecting:
            gc.enable()
    return ExportSummary(Path(out), fmt, rows, files, time.perf_counter() - started)


# -- Measurements --------------------------------------------------------------------


def _stored_records(
    store: Store, since: float | None, until: float | None, target: str | None, service: str | None
) -> Iterator[dict[str, Any]]:
    """The records of the target runs that started in [since, until), forbidden keys removed.

    A run's checks start after its verdict's start (the run's start), up to
    :data:`RUN_HORIZON` later: read that much past ``until``. Read from the store's columns
    (:meth:`Store.query_raw`): each envelope is decoded once, each head and ``test_keys`` once,
    with msgspec (the same dicts as ``json.loads`` of :meth:`Store.query_json`'s text, faster).
    """
    later = None if until is None else until + RUN_HORIZON
    decode = msgspec.json.decode
    envelopes: dict[int, dict[str, Any]] = {}
    for rows in store.query_raw(since=since, until=later, target=target, service=service, batch=_READ):
        if len(envelopes) > 10_000:
            envelopes.clear()
        for eid in {row[1] for row in rows} - envelopes.keys():
            envelopes[eid] = decode(store.envelopes((eid,))[eid])
        # One search of the whole batch; only a batch that names a forbidden key is searched per record.
        suspect = mentions_forbidden("".join(text for row in rows for text in row[2:]))
        for _, eid, head, test_keys in rows:
            record: dict[str, Any] = decode(head)  # the head and the envelope share no key
            record.update(envelopes[eid])
            record["test_keys"] = decode(test_keys)
            if suspect and (mentions_forbidden(head) or mentions_forbidden(test_keys)):
                record = strip_forbidden(record)
            yield record


def _measurements(
    store: Store, since: float | None, until: float | None, target: str | None, service: str | None,
    after: int | None = None,
) -> Iterator[ooni.Measurement]:
    """One OONI measurement per target run whose verdict is in [since, until) (probe.analysis.ooni).

    With ``after`` (µs), records are read from ``since`` but only runs whose verdict is at or
    after ``after`` are kept (a slice of a parallel export: its first runs may be cut).
    """
    limit = None if until is None else seconds_to_us(until)
    for group in group_runs(_stored_records(store, since, until, target, service)):
        if limit is not None or after is not None:
            verdict = next(r for r in group if r.get("record_type") == "verdict")
            at = time_us(verdict["measurement_start_time"])
            if (limit is not None and at >= limit) or (after is not None and at < after):
                continue
        yield measurement(group)


def _write(fmt: str, found: Iterator[ooni.Measurement], path: Path, batch: int, part: str = "part") -> tuple[int, int]:
    """Measurements to ``path`` in ``fmt``: (measurements, files)."""
    if fmt == "jsonl":
        return _write_jsonl(found, path), 1
    if fmt == "csv":
        return _write_csv(found, path, batch), 1
    return _write_parquet(found, path, batch, part)


# -- Parallel export -----------------------------------------------------------------

#: Exports of at least this many stored records are converted by several processes: the
#: conversion to measurements is Python (~20 µs of CPU per record), the rest is not.
PARALLEL_MIN = 200_000

#: A slice of a parallel export: runs whose verdict is in [after, until) (µs; None: open).
_Slice = tuple[int | None, int | None]


def _slices(store: Store, since: float | None, until: float | None, workers: int) -> list[_Slice]:
    """[since, until) cut where the records split into ``workers`` equal parts; one slice
    when the range holds fewer than :data:`PARALLEL_MIN` records or the store is not a file."""
    low = None if since is None else seconds_to_us(since)
    high = None if until is None else seconds_to_us(until)
    whole: list[_Slice] = [(low, high)]
    if workers < 2 or not store.path.is_file():
        return whole
    if not store.readonly:
        store.flush()  # the workers read the file
    where = " WHERE t_us >= ? AND t_us < ?"
    bounds = (-(1 << 62) if low is None else low, (1 << 62) if high is None else high)
    (count,) = store.db.execute("SELECT count(*) FROM records" + where, bounds).fetchone()
    if count < PARALLEL_MIN:
        return whole
    cuts: list[int] = []
    for k in range(1, workers):
        (cut,) = store.db.execute(
            "SELECT t_us FROM records" + where + " ORDER BY t_us LIMIT 1 OFFSET ?", (*bounds, count * k // workers)
        ).fetchone()
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    edges: list[int | None] = [low, *cuts, high]
    return list(zip(edges, edges[1:], strict=False))


def _export_part(path: str, fmt: str, out: str, part: _Slice, first: bool, target: str | None,
                 service: str | None, batch: int, name: str) -> tuple[int, int, list[int]]:
    """One slice of a parallel export, in its own process (its own connection to the store):
    (measurements, files, the missing envelope ids its records pointed to)."""
    gc.disable()
    pa.set_memory_pool(pa.system_memory_pool())
    after, until = part
    # A slice reads from RUN_HORIZON before its first run, so that grouping is settled there.
    since = None if after is None else after / 1e6 - (0 if first else RUN_HORIZON)
    with Store(path, readonly=True) as store:
        found = _measurements(store, since, None if until is None else until / 1e6, target, service,
                              None if first else after)
        return (*_write(fmt, found, Path(out), batch, name), sorted(store.missing_envelopes))


def _write_parallel(store: Store, fmt: str, path: Path, cuts: Sequence[_Slice], target: str | None,
                    service: str | None, batch: int) -> tuple[int, int]:
    """Each slice converted by its own process; JSONL and CSV parts are then joined in order."""
    parts = [path if fmt == "parquet" else path.with_name(f"{path.name}.{k}") for k in range(len(cuts))]
    try:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding SQLite and Arrow
        with ProcessPoolExecutor(len(cuts), mp_context=context) as pool:
            futures = [
                pool.submit(_export_part, str(store.path), fmt, str(out), cut, k == 0, target, service, batch,
                            f"part-{k}")
                for k, (cut, out) in enumerate(zip(cuts, parts, strict=True))
            ]
            done = [future.result() for future in futures]
        if fmt != "parquet":
            with path.open("wb") as sink:
                for k, part in enumerate(parts):
                    with part.open("rb") as source:
                        if fmt == "csv" and k:
                            source.readline()  # the header, written once
                        shutil.copyfileobj(source, sink, 1 << 22)
    finally:
        for part in parts:
            if part != path:
                part.unlink(missing_ok=True)
    for _, _, missing in done:
        store.missing_envelopes.update(missing)  # named by Store.damage()
    return sum(rows for rows, _, _ in done), sum(files for _, files, _ in done)


def _write_jsonl(found: Iterator[ooni.Measurement], path: Path) -> int:
    """JSONL: one OONI measurement per line, in run order."""
    count = 0
    with path.open("wb") as sink:
        for m in found:
            sink.write(ooni.encode(m) + b"\n")
            count += 1
    return count


def _blocking(value: bool | str | None) -> str | None:
    """``blocking`` as text: ``"false"``, the kind of blocking, or null (as ``->>'$.blocking'`` reads it)."""
    if value is None or isinstance(value, str):
        return value
    return "true" if value else "false"


def _getter(name: str, kind: pa.DataType, source: str) -> Callable[[ooni.Measurement], Any]:
    """The value of column ``name`` in a measurement (JSON columns: already encoded)."""
    path = {"m": name, "k": f"test_keys.{name}", "start": "test_keys.start_time", "ooni_time": name,
            "probe_id": "annotations", "blocking": "test_keys.blocking"}[source]
    get = operator.attrgetter(path)
    if source == "probe_id":
        return lambda m: m.annotations.get("probe_id")
    if source == "blocking":
        return lambda m: _blocking(get(m))
    if kind == JSON:
        return lambda m: None if (value := get(m)) is None else _ENCODE(value)
    return get


_GETTERS = [_getter(name, kind, source) for names, kind, source in _MEASUREMENT_COLUMNS for name in names.split()]
_SOURCES = [source for names, _, source in _MEASUREMENT_COLUMNS for _ in names.split()]


def _row(m: ooni.Measurement) -> list[Any]:
    """One measurement's column values: taken at once, so a batch holds rows, not measurements."""
    return [get(m) for get in _GETTERS]


def _rows_table(rows: Sequence[Sequence[Any]], as_json: bool) -> pa.Table:
    schema = MEASUREMENT_SCHEMA if as_json else _TEXT_SCHEMA
    columns: list[pa.Array] = []
    for field, source, values in zip(MEASUREMENT_SCHEMA, _SOURCES, zip(*rows, strict=True), strict=False):
        if field.type == JSON:
            text = pa.array(values, pa.string())
            columns.append(pa.ExtensionArray.from_storage(JSON, text) if as_json else text)
        elif source == "start":  # RFC 3339 with µs
            columns.append(pa.array(values, pa.string()).cast(TIMESTAMP))
        elif source == "ooni_time":
            columns.append(pc.strptime(pa.array(values, pa.string()), OONI_TIME, "us").cast(TIMESTAMP))
        else:
            columns.append(pa.array(values, field.type))
    if not rows:
        return schema.empty_table()
    return pa.Table.from_arrays(columns, schema=schema)


def measurement_table(found: Iterable[ooni.Measurement], as_json: bool = True) -> pa.Table:
    """Measurements as rows of :data:`MEASUREMENT_SCHEMA` (``as_json=False``: JSON columns as text)."""
    return _rows_table([_row(m) for m in found], as_json)


def _tables(found: Iterator[ooni.Measurement], batch: int, as_json: bool) -> Iterator[tuple[int, pa.Table]]:
    """Tables of ``batch`` measurements each, and how many."""
    while rows := [_row(m) for m in itertools.islice(found, batch)]:
        yield len(rows), _rows_table(rows, as_json)


def _write_csv(found: Iterator[ooni.Measurement], path: Path, batch: int) -> int:
    """CSV: one row per measurement, the columns of :data:`MEASUREMENT_SCHEMA`, JSON as text."""
    count = 0
    with path.open("wb") as sink, pacsv.CSVWriter(sink, _TEXT_SCHEMA) as writer:
        for rows, table in _tables(found, batch, as_json=False):
            writer.write_table(table)
            count += rows
    return count


def _day(t_us: int) -> str:
    return records.format_time(t_us // _DAY_US * 86400)[:10]


class _Partitions:
    """One open Parquet writer at a time: rows arrive in time order, so dates do too."""

    def __init__(self, root: Path, schema: pa.Schema, name: str = "part") -> None:
        self.root, self.schema, self.name = root, schema, name
        self.date: str | None = None
        self.writer: pq.ParquetWriter | None = None
        self.files = 0

    def write(self, date: str, table: pa.Table) -> None:
        if date != self.date or self.writer is None:
            self.close()
            folder = self.root / f"date={date}"
            folder.mkdir(exist_ok=True)
            part = 0
            while (folder / f"{self.name}-{part}.parquet").exists():
                part += 1
            self.writer = pq.ParquetWriter(
                folder / f"{self.name}-{part}.parquet", self.schema, compression="zstd"
            )
            self.date = date
            self.files += 1
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_parquet(found: Iterator[ooni.Measurement], root: Path, batch: int, name: str = "part"
                   ) -> tuple[int, int]:
    """Parquet: one row per measurement, a row group per batch and date, partitioned by date."""
    count = 0
    parts = _Partitions(root, MEASUREMENT_SCHEMA, name)
    try:
        for rows, table in _tables(found, batch, as_json=True):
            stamps = table.column("measurement_start_time").combine_chunks()
            days = stamps.cast(pa.int64()).to_numpy() // _DAY_US
            cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), rows]
            for start, stop in zip(cuts, cuts[1:], strict=False):
                parts.write(_day(int(days[start]) * _DAY_US), table.slice(start, stop - start))
            count += rows
    finally:
        parts.close()
    return count, parts.files


# -- Events ------------------------------------------------------------------------


def _export_events(
    store: Store,
    fmt: str,
    path: Path,
    since: float | None,
    until: float | None,
    target: str | None,
    service: str | None,
) -> tuple[int, int]:
    """Events are few (one per episode), so they are listed whole, then written."""
    found = store.events(since=since, until=until, target=target, service=service)
    rows = [strip_forbidden(event_record(e)) for e in found]
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as sink:
            for row in rows:
                sink.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        return len(rows), 1
    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as sink:
            _write_event_csv(sink, rows)
        return len(rows), 1
    parts = _Partitions(path, EVENT_SCHEMA)
    try:
        by_day = itertools.groupby(found, key=lambda e: _day(round(e.start_time * 1e6)))
        for day, group in by_day:
            parts.write(day, _event_table(list(group)))
    finally:
        parts.close()
    return len(found), parts.files


def _write_event_csv(sink: TextIO, rows: Sequence[dict[str, Any]]) -> None:
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(EVENT_SCHEMA.names)
    for row in rows:
        writer.writerow([_csv_cell(name, row[name]) for name in EVENT_SCHEMA.names])


def _csv_cell(name: str, value: Any) -> Any:
    """CSV text like pyarrow writes for records: JSON lists, true/false, empty for null."""
    if name == "evidence":
        return json.dumps(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _event_table(found: Sequence[records.Event]) -> pa.Table:
    data: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    for event in found:
        for name in EVENT_SCHEMA.names:
            if name in _EVENT_TIMES:
                value = getattr(event, name)
                data[name].append(None if value is None else round(value * 1e6))
            elif name == "ongoing":
                data[name].append(event.ongoing)
            elif name == "evidence":
                data[name].append(list(event.evidence))
            else:
                data[name].append(getattr(event, name))
    return pa.Table.from_pydict(data, schema=EVENT_SCHEMA)


__all__ = [
    "EVENT_SCHEMA",
    "FORBIDDEN_KEYS",
    "FORMATS",
    "MEASUREMENT_SCHEMA",
    "ExportError",
    "ExportSummary",
    "check_range",
    "export",
    "parse_when",
]
