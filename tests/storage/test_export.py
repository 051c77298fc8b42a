"""Export: round trips through pyarrow and DuckDB, filters, partitions, safety, the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest

import probe.storage.export as export_mod
from probe.analysis.ooni import measurement
from probe.cli import main
from probe.core.ooni import to_dict
from probe.core.records import Event
from probe.storage.export import EVENT_SCHEMA, MEASUREMENT_SCHEMA, ExportError, export, parse_when
from probe.storage.store import Store, time_us
from tests.storage.test_store import T0, make_records

DAY = 86400.0


@pytest.fixture
def records() -> list[dict[str, Any]]:
    """Three days of records (runs every 8 h), varied values, nulls and unicode."""
    return make_records(9, t0=T0, step=8 * 3600)


@pytest.fixture
def events() -> list[Event]:
    return [
        Event("e1", "probe-test", "tg-dc1", "telegram", "tcp", "tcp_ip", T0 + 600, T0 + 300,
              T0 + 600, T0 + 7200, T0 + 6900, T0 + 7200, 0.93, ("m1", "m2")),
        Event("e2", "probe-test", "wa", "whatsapp", "tls", "tls", T0 + DAY, T0 + DAY - 300,
              T0 + DAY, None, None, None, 0.5, ()),
    ]


@pytest.fixture
def store_path(tmp_path: Path, records: list[dict[str, Any]], events: list[Event]) -> Path:
    path = tmp_path / "store.sqlite"
    with Store(path, retention_days=None) as store:
        store.append(records)
        store.save_events(events)
    return path


def _export(path: Path, fmt: str, out: Path, **kw: Any) -> Any:
    with Store(path, readonly=True) as store:
        return export(store, fmt, out, batch=kw.pop("batch", 4), **kw)


_JSON_COLUMNS = [f.name for f in MEASUREMENT_SCHEMA if f.type == pa.json_(pa.string())]
_TOP = ("measurement_uid", "report_id", "test_name", "test_version", "test_runtime", "input", "probe_cc",
        "probe_asn", "probe_network_name", "resolver_ip", "resolver_asn", "resolver_network_name",
        "software_name", "software_version", "data_format_version", "annotations", "extensions",
        "test_helpers")


def _rebuilt(row: dict[str, Any]) -> dict[str, Any]:
    """The OONI measurement a flat row holds (the inverse of export.measurement_table)."""
    row = {k: (json.loads(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in row.items()}
    row.pop("date", None)
    start: dt.datetime = row.pop("measurement_start_time")
    began: dt.datetime = row.pop("test_start_time")
    top = {k: row.pop(k) for k in _TOP}
    row.pop("probe_id")
    blocking = row.pop("blocking")
    return {
        **top, "probe_ip": "127.0.0.1",
        "measurement_start_time": start.strftime("%Y-%m-%d %H:%M:%S"),
        "test_start_time": began.strftime("%Y-%m-%d %H:%M:%S"),
        "test_keys": {**row, "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                      "blocking": False if blocking == "false" else blocking},
    }


def _expected(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every run's OONI measurement (as the JSONL export writes it), by measurement_uid."""
    found = [to_dict(measurement(run)) for run in _runs(records)]
    return {m["measurement_uid"]: m for m in found}


def test_parquet_is_one_row_per_measurement_pyarrow(store_path: Path, tmp_path: Path,
                                                    records: list[dict[str, Any]]) -> None:
    out = tmp_path / "out"
    summary = _export(store_path, "parquet", out)  # batch of 4: several row groups
    expected = _expected(records)
    assert summary.rows == len(expected) == len(records) // 3
    dates = sorted(p.name for p in out.iterdir())
    assert dates == ["date=2026-04-16", "date=2026-04-17", "date=2026-04-18"]
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(expected)
    for field in MEASUREMENT_SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    assert table.schema.field("measurement_start_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("accessible").type == pa.bool_()
    rows = table.to_pylist()
    assert sorted(r["measurement_uid"] for r in rows) == sorted(expected)
    for row in rows:
        assert row["date"] == row["measurement_start_time"].strftime("%Y-%m-%d")
        assert row["probe_id"] == expected[row["measurement_uid"]]["annotations"]["probe_id"]
        assert _rebuilt(row) == expected[row["measurement_uid"]]  # lossless: every field is there


def test_parquet_in_duckdb(store_path: Path, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    out = tmp_path / "out"
    _export(store_path, "parquet", out)
    con = duckdb.connect()
    source = f"read_parquet('{out}/*/*.parquet', hive_partitioning = true)"
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    assert types["measurement_start_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["accessible"] == "BOOLEAN" and types["test_runtime"] == "DOUBLE"
    assert types["tcp_connect"] == "JSON" and types["checks"] == "JSON" and types["target"] == "VARCHAR"
    expected = _expected(records)
    assert con.execute(f"SELECT count(*) FROM {source}").fetchone() == (len(expected),)
    got = con.execute(
        f"SELECT measurement_uid, epoch_us(measurement_start_time), accessible, blocking, reason, "
        f"json_array_length(checks), checks->>'$[0].id', tcp_connect->>'$[0].ip' FROM {source}"
    ).fetchall()
    for uid, stamp, accessible, blocking, reason, n_checks, first, ip in got:
        want = expected[uid]["test_keys"]
        assert stamp == time_us(want["start_time"])
        assert (accessible, reason) == (want["accessible"], want["reason"])
        assert blocking == (None if want["blocking"] is None else json.dumps(want["blocking"]).strip('"'))
        assert (n_checks, first) == (len(want["checks"]), want["checks"][0]["id"])
        assert ip == (want["tcp_connect"][0]["ip"] if want["tcp_connect"] else None)


def _runs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The test records grouped by target run (make_records: two checks, then the verdict)."""
    return [records[i:i + 3] for i in range(0, len(records), 3)]


def test_jsonl_is_one_ooni_measurement_per_run(store_path: Path, tmp_path: Path,
                                               records: list[dict[str, Any]]) -> None:
    out = tmp_path / "out.jsonl"
    summary = _export(store_path, "jsonl", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    runs = _runs(records)
    assert summary.rows == len(lines) == len(runs)
    assert [json.loads(line) for line in lines] == [to_dict(measurement(run)) for run in runs]
    first = json.loads(lines[0])
    assert first["test_keys"]["evidence"] == [r["id"] for r in runs[0][:2]]
    assert [c["id"] for c in first["test_keys"]["checks"]] == [r["id"] for r in runs[0][:2]]
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), count(DISTINCT measurement_uid) FROM read_json_auto('{out}')"
                       ).fetchone() == (len(runs), len(runs))


def test_csv_is_one_row_per_measurement(store_path: Path, tmp_path: Path,
                                        records: list[dict[str, Any]]) -> None:
    out = tmp_path / "out.csv"
    _export(store_path, "csv", out)
    expected = _expected(records)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == MEASUREMENT_SCHEMA.names and len(rows) == len(expected)
    types = {f.name: f.type for f in MEASUREMENT_SCHEMA}
    types.update({name: pa.string() for name in _JSON_COLUMNS})
    table = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                     strings_can_be_null=True))
    for row in table.to_pylist():
        assert _rebuilt(row) == expected[row["measurement_uid"]]
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), sum(accessible::INT) FROM read_csv_auto('{out}')").fetchone() == (
        len(expected), sum(1 for m in expected.values() if m["test_keys"]["accessible"]))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_filters(store_path: Path, tmp_path: Path, records: list[dict[str, Any]],
                 fmt: str) -> None:
    since, until = T0 + DAY, T0 + 2 * DAY
    out = tmp_path / f"out.{fmt}"
    summary = _export(store_path, fmt, out, since=since, until=until, target="tg-dc1",
                      service="telegram")
    want = [r for r in records
            if since * 1e6 <= time_us(r["measurement_start_time"]) < until * 1e6]
    assert len(want) == 9
    assert summary.rows == len(want) // 3  # one measurement per run
    assert _export(store_path, fmt, tmp_path / f"none.{fmt}", service="whatsapp").rows == 0


def test_empty_exports_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    Store(path).close()
    _export(path, "csv", tmp_path / "e.csv")
    assert (tmp_path / "e.csv").read_text().startswith('"measurement_uid","report_id"')
    _export(path, "jsonl", tmp_path / "e.jsonl")
    assert (tmp_path / "e.jsonl").read_text() == ""
    _export(path, "parquet", tmp_path / "e")
    assert (tmp_path / "e").is_dir() and not any((tmp_path / "e").iterdir())


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_events_round_trip(store_path: Path, tmp_path: Path, events: list[Event],
                           fmt: str) -> None:
    out = tmp_path / f"events.{fmt}"
    assert _export(store_path, fmt, out, events=True).rows == 2
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ["e1", "e2"]
        assert rows[0]["start_time"] == "2026-04-16T06:20:00.000000Z"
        assert rows[0]["evidence"] == ["m1", "m2"] and rows[1]["end_time"] is None
        assert rows[1]["ongoing"] is True
    elif fmt == "csv":
        rows = list(csv.DictReader(out.open(newline="")))
        assert [r["id"] for r in rows] == ["e1", "e2"] and list(rows[0]) == EVENT_SCHEMA.names
        assert json.loads(rows[0]["evidence"]) == ["m1", "m2"] and rows[1]["end_time"] == ""
    else:
        table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
        assert table.num_rows == 2
        assert table.schema.field("start_time").type == pa.timestamp("us", tz="UTC")
        got = {r["id"]: r for r in table.to_pylist()}
        for event in events:
            row = got[event.id]
            assert row["start_time"].timestamp() == event.start_time
            assert row["evidence"] == list(event.evidence)
            assert row["confidence"] == event.confidence and row["ongoing"] == event.ongoing
        con = duckdb.connect()
        assert con.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchone() == (2,)


def test_exports_never_contain_the_probe_address(tmp_path: Path,
                                                 records: list[dict[str, Any]]) -> None:
    path = tmp_path / "s.sqlite"
    sneaky = dict(records[0], id="f" * 32, client_ip="203.0.113.9",
                  test_keys={**records[0]["test_keys"], "probe_ip": "203.0.113.9"})
    with Store(path) as store:
        store.append([*records, sneaky])
        store.flush()
        # Also bypass append's own stripping, as an older or foreign writer might.
        eid = store.db.execute("SELECT eid FROM envelopes LIMIT 1").fetchone()[0]
        store.db.execute(
            "INSERT INTO records (id, t_us, eid, target, service, record_type, test_name, head,"
            " test_keys) VALUES (?, ?, ?, 't', 's', 'check', 'tcp', ?, ?)",
            ("e" * 32, int(T0 * 1e6), eid,
             json.dumps({"record_type": "check", "id": "e" * 32, "client_ip": "203.0.113.9",
                         "measurement_start_time": "2026-04-16T06:10:00.000000Z"}),
             json.dumps({"nested": {"probe_ip": "203.0.113.9"}, "timings": {}})),
        )
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"x.{fmt}"
        _export(path, fmt, out)
        files = [out] if out.is_file() else list(out.rglob("*.parquet"))
        for file in files:
            data = file.read_bytes()
            if fmt == "jsonl":  # OONI's probe_ip, always the scrubbed value
                assert data.count(b'"probe_ip"') == data.count(b'"probe_ip":"127.0.0.1"') == len(records) // 3
                data = data.replace(b'"probe_ip":"127.0.0.1"', b"")
            assert b"probe_ip" not in data and b"client_ip" not in data, (fmt, file)
            assert b"203.0.113.9" not in data, (fmt, file)
        if fmt == "parquet":
            names = ds.dataset(out, format="parquet", partitioning="hive").schema.names
            assert not {"probe_ip", "client_ip"} & set(names)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-04-18", "--until", "2026-04-17"], "is not before --until"),
        (["--since", "tomorrow-ish"], "not a time"),
        (["--until", "2026-13-45"], "--until"),
        (["--format", "xml"], "unknown format"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(store_path: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                args: list[str], message: str) -> None:
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    code = main(["export", "--store", str(store_path), "--out", str(out_dir / "x.jsonl"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert _listing(out_dir) == []


def test_unwritable_destinations(store_path: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (tmp_path / "missing" / "x.csv", blocker / "x.csv"):
        assert main(["export", "--store", str(store_path), "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep").write_text("x")
    assert main(["export", "--store", str(store_path), "--format", "parquet",
                 "--out", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _listing(taken) == ["keep"]
    assert main(["export", "--store", str(store_path), "--out", str(tmp_path / "x.unknown")]) == 2
    assert "give --format" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_failure_midway_leaves_no_partial_file(store_path: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    previous = out_dir / f"x.{fmt}"
    if fmt != "parquet":
        previous.write_text("an earlier, complete export\n")
    calls = {"n": 0}
    real = export_mod.measurement

    def failing(group: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 6:  # the second batch of 4
            raise OSError(28, "No space left on device")
        return real(group)

    monkeypatch.setattr(export_mod, "measurement", failing)
    with pytest.raises(OSError, match="No space"):
        _export(store_path, fmt, previous)
    expected = [previous.name] if fmt != "parquet" else []
    assert _listing(out_dir) == expected
    if fmt != "parquet":
        assert previous.read_text() == "an earlier, complete export\n"


def test_parse_when() -> None:
    assert parse_when("2026-04-16") == T0 - (6 * 3600 + 600)
    assert parse_when("2026-04-16T06:10:00Z") == T0
    assert parse_when("24h", now=T0) == T0 - DAY
    assert parse_when("90m", now=T0) == T0 - 5400
    assert parse_when("2w", now=T0) == T0 - 14 * DAY
    with pytest.raises(ExportError, match="--until 'soon'"):
        parse_when("soon", flag="--until")


def test_cli_export_and_show(store_path: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             records: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "cli.jsonl"
    assert main(["export", "--store", str(store_path), "--out", str(out)]) == 0
    assert f"{len(records) // 3} measurements" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == len(records) // 3
    assert main(["show", "--store", str(store_path), "--json", "--limit", "2"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    verdicts = [r for r in records if r["record_type"] == "verdict"]
    assert shown == verdicts[-2:]
    assert main(["show", "--store", str(store_path), "--limit", "3"]) == 0
    table = capsys.readouterr().out
    for column in ("target", "service", "accessible", "blocking", "failure", "reason"):
        assert column in table
    assert "tcp_ip" in table and "inconclusive" in table and "tg-dc1" in table


def test_cli_show_uses_the_targets_file_store(tmp_path: Path, store_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"settings:\n  store: {store_path}\n"
                       "targets:\n  - {name: a, service: s, category: control, host: a.test}\n")
    assert main(["show", "--targets", str(targets), "--json", "--target", "nope"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["show", "--targets", str(targets), "--json", "--since", "2026-04-18T12:00:00Z"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # runs at 14:10 and 22:10 on the 18th


def test_cli_missing_or_corrupt_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.sqlite"
    assert main(["show", "--store", str(missing)]) == 1
    assert "no such store" in capsys.readouterr().err and not missing.exists()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    assert main(["export", "--store", str(bad), "--out", str(tmp_path / "x.csv")]) == 2  # damaged
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    assert main(["show", "--store", str(newer)]) == 1
    assert "newer than this probe" in capsys.readouterr().err


def test_export_bench_runs_small(tmp_path: Path) -> None:
    """bench/export_bench.py still works (tiny N; its figures are not asserted)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "bench/export_bench.py"), "--n", "500", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "parquet :" in done.stdout and "83 measurements" in done.stdout and "peak RSS" in done.stdout


def test_parallel_export_equals_the_sequential_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices converted by worker processes give the same measurements, none lost at the cuts.

    Runs every 7 minutes, the verdict stamped first as the pipeline does (its checks come after it),
    all under one run id as a daemon writes them: a cut falls inside runs.
    """
    base = make_records(60, t0=T0, step=420)
    records: list[dict[str, Any]] = []
    for k in range(0, len(base), 3):
        first, second, verdict = base[k:k + 3]
        start = verdict["measurement_start_time"]
        records.append({**verdict, "report_id": "daemon", "measurement_start_time": first["measurement_start_time"]})
        records.extend({**r, "report_id": "daemon", "measurement_start_time": start} for r in (first, second))
    path = tmp_path / "s.sqlite"
    with Store(path, retention_days=None) as store:
        store.append(records)
    monkeypatch.setattr(export_mod, "PARALLEL_MIN", 1)
    for fmt in ("jsonl", "csv", "parquet"):
        one, three = tmp_path / f"one.{fmt}", tmp_path / f"three.{fmt}"
        with Store(path, readonly=True) as store:
            assert len(export_mod._slices(store, T0 + 3600, None, 4)) == 4  # two cuts fall on checks
            alone = export(store, fmt, one, since=T0 + 3600, workers=1)
            split = export(store, fmt, three, since=T0 + 3600, workers=4, batch=7)
        assert alone.rows == split.rows == 60 - 9  # the runs from T0 + 1 h (every 420 s)
        assert _lines(one, fmt)[0] == _lines(three, fmt)[0]  # the CSV header, once
        assert sorted(_lines(one, fmt)) == sorted(_lines(three, fmt))
        assert len(_lines(one, fmt)) == alone.rows + (fmt == "csv")
        if fmt == "parquet":
            assert split.files > alone.files


def _lines(out: Path, fmt: str) -> list[Any]:
    """An export's rows as comparable values (Parquet: by measurement_uid)."""
    if fmt == "parquet":
        rows = ds.dataset(out, partitioning="hive").to_table().to_pylist()
        return sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)
    with out.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f)) if fmt == "csv" else f.read().splitlines()
