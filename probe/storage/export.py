"""Dataset export: the store's records (or events) as JSONL, CSV or Parquet, streamed.

Formats:

* ``jsonl``: one OONI measurement per line, one per target run
  (:mod:`probe.core.ooni`, built from the run's records by
  :mod:`probe.analysis.ooni`), which OONI's own reader (``oonidata``) loads. A run
  is in the range when it started (its verdict's time) in it.
* ``csv``: the flat columns of :data:`RECORD_SCHEMA`, ``test_keys`` as JSON text.
* ``parquet``: a directory partitioned hive-style by the UTC date of the
  measurement (``date=YYYY-MM-DD/part-0.parquet``), with real column types:
  ``measurement_start_time`` is ``timestamp[us, UTC]``, ``ok`` a boolean,
  ``test_runtime`` a double, and ``test_keys`` a JSON column (Arrow's
  ``arrow.json`` extension over text, Parquet logical type JSON; DuckDB reads
  it as ``JSON``). ``test_keys`` is JSON, not a struct, because its shape
  differs per ``test_name`` and grows with the checks; a struct would be the
  union of every check's details and change its type whenever a check does.

Streaming: rows come from the store in batches of ``batch`` (50,000) and each
batch becomes one Parquet row group (per date), one CSV block or one JSONL
block; memory is bounded by the batch, not by the export.

Safety: an export is written under a temporary name in the destination's
directory and renamed into place only when complete; on any error the
temporary file (or directory) is removed. Exports never contain a field named
in :data:`probe.storage.store.FORBIDDEN_KEYS` (``probe_ip``, ``client_ip``): the store
strips them on append, and the exporter checks again.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from probe.analysis.ooni import RUN_HORIZON, group_runs, measurement
from probe.core import ooni, records
from probe.storage.store import (
    ENVELOPE_FIELDS,
    FORBIDDEN_KEYS,
    Store,
    event_record,
    mentions_forbidden,
    seconds_to_us,
    strip_forbidden,
    time_us,
)

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
BATCH = 25_000
_DAY_US = 86_400_000_000

TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON = pa.json_(pa.string())

#: Columns of a record in CSV and Parquet, in the order of :mod:`probe.core.records`.
RECORD_SCHEMA = pa.schema(
    [
        ("schema_version", pa.string()),
        ("record_type", pa.string()),
        ("id", pa.string()),
        ("report_id", pa.string()),
        ("probe_id", pa.string()),
        ("probe_cc", pa.string()),
        ("probe_asn", pa.string()),
        ("probe_network_name", pa.string()),
        ("software_name", pa.string()),
        ("software_version", pa.string()),
        ("measurement_start_time", TIMESTAMP),
        ("test_name", pa.string()),
        ("test_runtime", pa.float64()),
        ("input", pa.string()),
        ("target", pa.string()),
        ("service", pa.string()),
        ("category", pa.string()),
        ("role", pa.string()),
        ("ok", pa.bool_()),
        ("failure", pa.string()),
        ("failed_operation", pa.string()),
        ("test_keys", JSON),
    ]
)

#: The per-record (non-envelope) fields parsed from the stored heads.
_HEAD_SCHEMA = pa.schema(
    [
        f if f.name != "measurement_start_time" else pa.field(f.name, pa.string())
        for f in RECORD_SCHEMA
        if f.name not in ENVELOPE_FIELDS and f.name != "test_keys"
    ]
)
_HEAD_PARSE = pajson.ParseOptions(explicit_schema=_HEAD_SCHEMA, unexpected_field_behavior="ignore")

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
) -> ExportSummary:
    """Write the matching records (or events) to ``out``; all or nothing."""
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
    try:
        if events:
            rows, files = _export_events(store, fmt, dest.tmp, since, until, target, service)
        elif fmt == "jsonl":
            rows, files = _write_measurements(store, dest.tmp, since, until, target, service), 1
        else:
            batches = store.query_raw(
                since=since, until=until, target=target, service=service,
                batch=batch,
            )
            if fmt == "csv":  # both close ``batches`` on their reading thread
                rows, files = _write_csv(store, batches, dest.tmp), 1
            else:
                rows, files = _write_parquet(store, batches, dest.tmp)
        dest.commit()
    except BaseException:
        dest.discard()
        raise
    finally:
        pa.set_memory_pool(previous_pool)
    return ExportSummary(Path(out), fmt, rows, files, time.perf_counter() - started)


# -- Records -----------------------------------------------------------------------

Rows = Sequence[tuple[int, int, str, str]]


def _clean_json(text: str) -> str:
    """``text`` without forbidden keys (only parsed when it mentions one)."""
    if not mentions_forbidden(text):
        return text
    return json.dumps(strip_forbidden(json.loads(text)), separators=(",", ":"), ensure_ascii=False)


def _stored_records(
    store: Store, since: float | None, until: float | None, target: str | None, service: str | None
) -> Iterator[dict[str, Any]]:
    """The records of the target runs that started in [since, until), forbidden keys removed.

    A run's checks start after its verdict's start (the run's start), up to
    :data:`RUN_HORIZON` later: read that much past ``until``.
    """
    later = None if until is None else until + RUN_HORIZON
    for text in store.query_json(since=since, until=later, target=target, service=service):
        record: dict[str, Any] = msgspec.json.decode(text)  # the same dicts as json.loads, faster
        yield strip_forbidden(record) if mentions_forbidden(text) else record


def measurement_line(group: Sequence[Mapping[str, Any]]) -> bytes:
    """One JSONL line: the OONI measurement of one target run."""
    return ooni.encode(measurement(group)) + b"\n"


def _write_measurements(
    store: Store, path: Path, since: float | None, until: float | None, target: str | None,
    service: str | None,
) -> int:
    """JSONL: one OONI measurement per target run (probe.analysis.ooni), in run order."""
    count = 0
    limit = None if until is None else seconds_to_us(until)
    with path.open("wb") as sink:
        for group in group_runs(_stored_records(store, since, until, target, service)):
            verdict = next(r for r in group if r.get("record_type") == "verdict")
            if limit is not None and time_us(verdict["measurement_start_time"]) >= limit:
                continue
            sink.write(measurement_line(group))
            count += 1
    return count


@dataclass(frozen=True)
class _Batch:
    """One batch of stored rows, prepared on the reading thread (everything needing the GIL)."""

    t_us: pa.Array  # int64
    eids: pa.Array  # int64
    heads: bytes  # the heads, one JSON object per line
    test_keys: pa.Array  # string
    envelopes: dict[int, str]
    count: int


def _prepare(store: Store, rows: Rows) -> _Batch:
    t_us, eids, heads, tks = zip(*rows, strict=True)
    buffer = "\n".join(heads).encode("utf-8")
    if any(f'"{key}"'.encode() in buffer for key in FORBIDDEN_KEYS):
        buffer = "\n".join(_clean_json(head) for head in heads).encode("utf-8")
    test_keys = pa.array(tks, pa.string())
    if any(pc.any(pc.match_substring(test_keys, f'"{key}"')).as_py() for key in FORBIDDEN_KEYS):
        test_keys = pa.array([_clean_json(tk) for tk in tks], pa.string())
    eid_array = pa.array(eids, pa.int64())
    return _Batch(
        t_us=pa.array(t_us, pa.int64()),
        eids=eid_array,
        heads=buffer,
        test_keys=test_keys,
        envelopes=store.envelopes(pc.unique(eid_array).to_pylist()),
        count=len(rows),
    )


def _prefetch(
    store: Store, batches: Iterator[list[tuple[int, int, str, str]]], depth: int = 1
) -> Iterator[_Batch]:
    """Read and prepare batches on a thread while the caller converts and writes.

    SQLite row fetching and the Python-side preparation hold the GIL; Arrow's
    JSON parsing and the Parquet/CSV writers release it, so the two overlap. At
    most ``depth`` prepared batches wait in the queue, which bounds memory.
    """
    items: queue.Queue[_Batch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: _Batch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for rows in batches:
                if not put(_prepare(store, rows)):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # release the cursor on this thread, before the store closes

    worker = threading.Thread(target=produce, name="export-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=30)


def _envelope_columns(batch: _Batch) -> dict[str, pa.Array]:
    """The envelope fields of each row: parsed once per distinct envelope, then taken."""
    ids = list(batch.envelopes)
    parsed = [json.loads(_clean_json(batch.envelopes[eid])) for eid in ids]
    index = pc.index_in(batch.eids, value_set=pa.array(ids, pa.int64()))
    columns: dict[str, pa.Array] = {}
    for name in ENVELOPE_FIELDS:
        values = [_text(env.get(name)) for env in parsed]
        columns[name] = pa.array(values, pa.string()).take(index)
    return columns


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _parse_heads(buffer: bytes, count: int) -> pa.Table:
    """The per-record fields of every head, with Arrow's JSON reader (C++, in bulk)."""
    try:
        table = pajson.read_json(
            io.BytesIO(buffer),
            read_options=pajson.ReadOptions(block_size=1 << 22),
            parse_options=_HEAD_PARSE,
        )
        if table.num_rows == count:
            return table
    except pa.ArrowInvalid:
        pass
    return _parse_heads_slowly(buffer.decode("utf-8").split("\n"))


def _parse_heads_slowly(heads: Sequence[str]) -> pa.Table:
    """Fallback for heads Arrow's strict reader refuses (a field of an unexpected type)."""
    parsed = [json.loads(head) for head in heads]
    columns: list[pa.Array] = []
    for field in _HEAD_SCHEMA:
        raw = [row.get(field.name) for row in parsed]
        if field.type == pa.float64():
            values: list[Any] = [_number(v) for v in raw]
        elif field.type == pa.bool_():
            values = [v if isinstance(v, bool) else None for v in raw]
        else:
            values = [_text(v) for v in raw]
        columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=_HEAD_SCHEMA)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _record_table(batch: _Batch, text_time: bool) -> pa.Table:
    """One batch as a table of :data:`RECORD_SCHEMA` columns.

    With ``text_time`` (CSV), ``measurement_start_time`` stays the stored RFC
    3339 text and ``test_keys`` plain text.
    """
    head = _parse_heads(batch.heads, batch.count)
    envelope = _envelope_columns(batch)
    columns: list[pa.Array] = []
    fields: list[pa.Field] = []
    for field in RECORD_SCHEMA:
        name = field.name
        if name in envelope:
            column = envelope[name]
        elif name == "test_keys":
            text = batch.test_keys
            column = text if text_time else pa.ExtensionArray.from_storage(JSON, text)
        elif name == "measurement_start_time" and not text_time:
            column = batch.t_us.cast(TIMESTAMP)
        else:
            column = head.column(name).combine_chunks()
        columns.append(column)
        fields.append(pa.field(name, column.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _write_csv(store: Store, batches: Iterator[list[tuple[int, int, str, str]]], path: Path) -> int:
    count = 0
    writer: pacsv.CSVWriter | None = None
    with path.open("wb") as sink:
        for batch in _prefetch(store, batches):
            table = _record_table(batch, text_time=True)
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            count += batch.count
        if writer is None:  # no rows: still a header
            sink.write((",".join(f'"{name}"' for name in RECORD_SCHEMA.names) + "\n").encode())
        else:
            writer.close()
    return count


def _day(t_us: int) -> str:
    return records.format_time(t_us // _DAY_US * 86400)[:10]


class _Partitions:
    """One open Parquet writer at a time: rows arrive in time order, so dates do too."""

    def __init__(self, root: Path, schema: pa.Schema) -> None:
        self.root, self.schema = root, schema
        self.date: str | None = None
        self.writer: pq.ParquetWriter | None = None
        self.files = 0

    def write(self, date: str, table: pa.Table) -> None:
        if date != self.date or self.writer is None:
            self.close()
            folder = self.root / f"date={date}"
            folder.mkdir(exist_ok=True)
            part = 0
            while (folder / f"part-{part}.parquet").exists():
                part += 1
            self.writer = pq.ParquetWriter(
                folder / f"part-{part}.parquet", self.schema, compression="zstd"
            )
            self.date = date
            self.files += 1
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_parquet(
    store: Store, batches: Iterator[list[tuple[int, int, str, str]]], root: Path
) -> tuple[int, int]:
    count = 0
    parts = _Partitions(root, RECORD_SCHEMA)
    try:
        for batch in _prefetch(store, batches):
            table = _record_table(batch, text_time=False)
            days = batch.t_us.to_numpy() // _DAY_US
            cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), batch.count]
            for start, stop in zip(cuts, cuts[1:], strict=False):
                parts.write(_day(int(days[start]) * _DAY_US), table.slice(start, stop - start))
            count += batch.count
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
    "RECORD_SCHEMA",
    "ExportError",
    "ExportSummary",
    "check_range",
    "export",
    "parse_when",
]
