"""``probe collector export``: measurements out of the central store, for researchers.

JSONL is the measurements themselves, one OONI object a line, as the probes sent them. Parquet
has the indexed columns typed, plus ``body`` (the same JSON). Both stream from a server-side
cursor and write in chunks, so memory stays constant whatever the range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

FORMATS = ("jsonl", "parquet")
_CHUNK = 5000


def _chunks(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def write_jsonl(rows: Iterable[tuple[Any, ...]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(row[-1])
        out.write("\n")
        count += 1
    return count


def write_parquet(rows: Iterable[tuple[Any, ...]], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("measurement_uid", pa.string()), ("probe_id", pa.string()), ("probe_cc", pa.string()),
        ("probe_asn", pa.string()), ("test_name", pa.string()), ("input", pa.string()),
        ("service", pa.string()), ("measurement_start_time", pa.timestamp("us", tz="UTC")),
        ("body", pa.string()),
    ])
    count = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for chunk in _chunks(rows, _CHUNK):
            columns = list(zip(*chunk, strict=True))
            columns[0] = tuple(str(u) for u in columns[0])
            columns[7] = tuple(t.astimezone(dt.UTC) for t in columns[7])
            writer.write_table(pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema,
                                                                                              strict=True)],
                                                    schema=schema))
            count += len(chunk)
    return count
