"""The researcher's query, "blocking by service by day", in DuckDB over our exports.

Forty target runs of two services over three days (every 90 min), with blocking cycling through
false, "tcp_ip" and null (inconclusive), are stored, exported as Parquet and as OONI JSONL, and
counted by DuckDB; the expected counts are computed here from the runs themselves.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from probe.storage.export import export
from probe.storage.store import Store
from tests.storage.test_store import T0, make_records

RUNS = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Counter[tuple[str, str, str]]]:
    root = tmp_path_factory.mktemp("duck")
    records: list[dict[str, Any]] = []
    for k, record in enumerate(make_records(RUNS, t0=T0, step=1.5 * 3600)):
        if (k // 3) % 5 == 3:  # every fifth run is of another service
            record = {**record, "service": "whatsapp", "target": "wa-web"}
        records.append(record)
    expected: Counter[tuple[str, str, str]] = Counter()
    for v in (r for r in records if r["record_type"] == "verdict"):
        day = v["measurement_start_time"][:10]
        blocking = v["test_keys"]["blocking"]
        kind = "inconclusive" if blocking is None else ("ok" if blocking is False else str(blocking))
        expected[(day, v["service"], kind)] += 1
    with Store(root / "s.sqlite") as store:
        store.append(records)
        export(store, "parquet", root / "parquet")
        export(store, "jsonl", root / "ooni.jsonl")
    return root / "parquet", root / "ooni.jsonl", expected


def _counts(rows: list[tuple[Any, ...]]) -> Counter[tuple[str, str, str]]:
    return Counter({(str(day), service, kind): n for day, service, kind, n in rows})


def test_blocking_by_service_by_day_from_parquet(exported: tuple[Path, Path, Counter[tuple[str, str, str]]]) -> None:
    parquet, _, expected = exported
    rows = duckdb.connect().execute(f"""
        SELECT date, service,
               coalesce(CASE WHEN test_keys->>'$.blocking' = 'false' THEN 'ok'
                             ELSE test_keys->>'$.blocking' END, 'inconclusive') AS blocking,
               count(*) AS n
        FROM read_parquet('{parquet}/*/*.parquet', hive_partitioning = true)
        WHERE record_type = 'verdict'
        GROUP BY ALL ORDER BY ALL
    """).fetchall()
    assert _counts(rows) == expected
    assert sum(expected.values()) == RUNS and len({d for d, _, _ in expected}) == 3
    assert max(expected.values()) > 1 and len({s for _, s, _ in expected}) == 2


def test_blocking_by_service_by_day_from_ooni_jsonl(
    exported: tuple[Path, Path, Counter[tuple[str, str, str]]],
) -> None:
    _, jsonl, expected = exported
    rows = duckdb.connect().execute(f"""
        SELECT strptime(measurement_start_time, '%Y-%m-%d %H:%M:%S')::DATE AS day,
               test_keys->>'$.service' AS service,
               coalesce(CASE WHEN test_keys->>'$.blocking' = 'false' THEN 'ok'
                             ELSE test_keys->>'$.blocking' END, 'inconclusive') AS blocking,
               count(*) AS n
        FROM read_json('{jsonl}', columns = {{measurement_start_time: 'VARCHAR', test_keys: 'JSON'}})
        GROUP BY ALL ORDER BY ALL
    """).fetchall()
    assert _counts([(dt.date.isoformat(d), s, k, n) for d, s, k, n in rows]) == expected
