"""The store beyond the basics (tests/storage/test_store_core.py): lossless round trips, the
envelope split, append-only, read-only opening, batching by age, streaming, retention."""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.core.records import (
    CheckResult,
    Event,
    ProbeMeta,
    Verdict,
    check_record,
    format_time,
    verdict_record,
)
from probe.storage.store import SCHEMA, Store, StoreError, time_us

T0 = 1_776_319_800.0  # 2026-04-16T06:10:00Z


@dataclass(frozen=True)
class Cert:
    subject: str
    sans: tuple[str, ...]


@dataclass(frozen=True)
class Details:
    address: str
    port: int
    sni: str | None
    certificate: Cert | None
    headers: dict[str, str]


def make_records(n_runs: int = 3, t0: float = T0, step: float = 300.0) -> list[dict[str, Any]]:
    """Check and verdict records of several runs, built the real way, with varied values."""
    out: list[dict[str, Any]] = []
    for run in range(n_runs):
        meta = ProbeMeta(probe_id="probe-test", probe_cc="RU", probe_asn="AS12389",
                         probe_network_name="Net" if run % 2 else None)
        start = t0 + run * step
        checks = [
            CheckResult("tcp", "tg-dc1", "198.18.175.50:443", run % 3 != 1,
                        None if run % 3 != 1 else "connection_reset",
                        None if run % 3 != 1 else "connect", start, 0.0123,
                        Details("198.18.175.50", 443, None, None, {}),
                        timings={"connect": 0.0123}),
            CheckResult("tls", "tg-dc1", "198.18.175.50:443", True, None, None, start + 0.5,
                        0.25, Details("198.18.175.50", 443, "web.telegram.org",
                                      Cert("CN=ü *.telegram.org", ("a", "b")), {"x": "y"}),
                        role="control", timings={"connect": 0.01, "tls_handshake": 0.2}),
        ]
        out += [check_record(c, meta, "telegram", "messaging") for c in checks]
        blocking: Any = [False, "tcp_ip", None][run % 3]
        accessible = [True, False, None][run % 3]
        verdict = Verdict("tg-dc1", "telegram", "messaging", accessible, blocking, f"rule{run}",
                          "reason with \"quotes\", commas\nand a newline", start + 1,
                          evidence=tuple(c.id for c in checks),
                          failure=checks[0].failure)
        out.append(verdict_record(verdict, meta))
    return out


def test_records_round_trip_exactly(tmp_path: Path) -> None:
    records = make_records(6)
    with Store(tmp_path / "s.sqlite") as store:
        store.append(records)
        back = list(store.query())
        as_text = [json.loads(t) for t in store.query_json()]
    assert back == records
    assert [list(r) for r in back] == [list(r) for r in records]  # field order kept too
    assert as_text == records


def test_envelopes_are_stored_once_per_run(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.append(make_records(4))
        store.flush()
        assert store.db.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 4
        heads = [h for (h,) in store.db.execute("SELECT head FROM records")]
    assert all('"probe_id"' not in h and '"report_id"' not in h for h in heads)


def test_records_json_view_gives_the_full_record(tmp_path: Path) -> None:
    records = make_records(2)
    with Store(tmp_path / "s.sqlite") as store:
        store.append(records)
        store.flush()
        rows = store.db.execute("SELECT id, record FROM records_json ORDER BY seq").fetchall()
    assert {i: json.loads(r) for i, r in rows} == {r["id"]: r for r in records}


def test_duplicate_ids_are_ignored_and_updates_refused(tmp_path: Path) -> None:
    records = make_records(1)
    with Store(tmp_path / "s.sqlite") as store:
        store.append(records)
        store.append(records)
        assert store.count() == len(records)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute("UPDATE records SET target = 'x'")


def test_forbidden_keys_are_never_stored(tmp_path: Path) -> None:
    record = make_records(1)[0]
    record["client_ip"] = "203.0.113.7"
    record["test_keys"] = {**record["test_keys"], "probe_ip": "203.0.113.7",
                           "nested": [{"client_ip": "203.0.113.7", "keep": 1}]}
    with Store(tmp_path / "s.sqlite") as store:
        store.append([record])
        store.flush()
        raw = " ".join(str(v) for row in store.db.execute("SELECT * FROM records") for v in row)
        (back,) = store.query()
    assert "203.0.113.7" not in raw and "probe_ip" not in raw and "client_ip" not in raw
    assert back["test_keys"]["nested"] == [{"keep": 1}]


def test_bad_records_are_refused(tmp_path: Path) -> None:
    record = make_records(1)[0]
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match="target"):
            store.append([{k: v for k, v in record.items() if k != "target"}])
        with pytest.raises(ValueError, match="measurement_start_time"):
            store.append([{**record, "measurement_start_time": "yesterday"}])


def test_batches_commit_by_size_and_by_age(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    now = [T0]
    records = make_records(4)  # 12 records
    with Store(path, batch_size=5, flush_seconds=10, clock=lambda: now[0]) as store:
        other = sqlite3.connect(path)

        def committed() -> int:
            return int(other.execute("SELECT count(*) FROM records").fetchone()[0])

        store.append(records[:4])
        assert committed() == 0  # buffered
        store.append(records[4:7])
        assert committed() == 7  # the batch is full: committed, with the rest of that call
        store.append(records[7:8])
        assert committed() == 7  # buffered
        now[0] += 11
        store.append(records[8:10])  # the oldest buffered record is now old enough
        assert committed() == 10
        store.append(records[10:])
        assert committed() == 10
    assert committed() == 12  # close flushes
    other.close()


def test_close_is_idempotent_and_closed_store_refuses(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(make_records(1))


def test_read_only_never_creates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(StoreError, match="no such store"):
        Store(missing, readonly=True)
    assert not missing.exists()
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.append(make_records(1))
    with Store(path, readonly=True) as store:
        assert store.count() == 3
        with pytest.raises(StoreError, match="read-only"):
            store.append(make_records(1))


def test_other_sqlite_files_and_garbage_are_clear_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(StoreError, match=f"{other}: .*not a probe store"):
        Store(other)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00\x01not sqlite" * 500)
    with pytest.raises(StoreError, match=str(garbage)):
        Store(garbage, readonly=True)
    directory = tmp_path / "dir.sqlite"
    directory.mkdir()
    with pytest.raises(StoreError, match="not a file"):
        Store(directory)


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA
        assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_query_filters_limit_and_order(tmp_path: Path) -> None:
    records = make_records(5)
    with Store(tmp_path / "s.sqlite") as store:
        store.append(records)
        assert [r["id"] for r in store.query(record_type="verdict")] == [
            r["id"] for r in records if r["record_type"] == "verdict"]
        assert {r["test_name"] for r in store.query(test_name="tls")} == {"tls"}
        assert list(store.query(service="whatsapp")) == []
        since, until = T0 + 300, T0 + 900  # runs 1 and 2
        got = list(store.query(since=since, until=until))
        assert len(got) == 6
        assert all(since <= time_us(r["measurement_start_time"]) / 1e6 < until for r in got)
        newest = list(store.query(limit=2, newest_first=True))
        assert [r["id"] for r in newest] == [r["id"] for r in records[-2:]][::-1]


def _query_peak(path: Path, runs: int) -> int:
    with Store(path, batch_size=5000) as store:
        for start in range(0, runs, 500):
            chunk = [r for i in range(start, min(runs, start + 500))
                     for r in make_records(1, t0=T0 + i * 300)]
            for r in chunk:
                r["test_keys"]["padding"] = "x" * 2000
            store.append(chunk)
        store.flush()
        tracemalloc.start()
        seen = sum(1 for _ in store.query())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seen == 3 * runs
    return peak


def test_query_streams_in_constant_memory(tmp_path: Path) -> None:
    """Reading 4x the records (24 MB instead of 6 MB) does not raise the peak."""
    small = _query_peak(tmp_path / "small.sqlite", 1000)
    large = _query_peak(tmp_path / "large.sqlite", 4000)
    assert large < small * 1.3 + 200_000
    assert large < 12_000_000  # far below the 24 MB result


def test_time_us_is_exact() -> None:
    assert time_us("2026-04-16T06:10:00.000001Z") == 1_776_319_800_000_001
    assert time_us(format_time(1_776_319_800.123456)) == 1_776_319_800_123_456
    assert time_us("2026-04-16T08:10:00+02:00") == 1_776_319_800_000_000


def test_prune_deletes_old_records_events_and_envelopes(tmp_path: Path) -> None:
    now = T0 + 100 * 86400
    old = make_records(2)
    new = make_records(1, t0=now - 60)
    ended = Event("old", "p", "tg", "telegram", "tcp", "tcp_ip", T0, T0 - 300, T0,
                  T0 + 600, T0 + 300, T0 + 600, 0.9, ("a",))
    ongoing = Event("on", "p", "tg", "telegram", "tcp", "tcp_ip", T0, T0 - 300, T0,
                    None, None, None, 0.8)
    with Store(tmp_path / "s.sqlite", retention_days=30, clock=lambda: now) as store:
        store.append(old + new)
        store.save_events([ended, ongoing])
        assert store.prune() == 6
        assert [r["id"] for r in store.query()] == [r["id"] for r in new]
        assert store.db.execute("SELECT count(*) FROM envelopes").fetchone()[0] == 1
        assert [e.id for e in store.events()] == ["on"]
        assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # space returned


def test_prune_runs_at_open(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path, retention_days=None) as store:
        store.append(make_records(2))
    with Store(path, retention_days=1, clock=lambda: T0 + 5 * 86400) as store:
        assert store.count() == 0


def test_events_overlap_and_filters(tmp_path: Path) -> None:
    def event(eid: str, start: float, end: float | None, target: str = "tg") -> Event:
        return Event(eid, "p", target, "telegram" if target == "tg" else "whatsapp", "tcp",
                     "tcp_ip", start, start - 300, start, end, None if end is None else end - 300,
                     end, 0.75, ("m1",))

    events = [event("a", 1000, 2000), event("b", 3000, None), event("c", 1500, 5000, "wa")]
    with Store(tmp_path / "s.sqlite") as store:
        store.save_events(events)
        assert [e.id for e in store.events()] == ["a", "c", "b"]
        assert [e.id for e in store.events(since=2500)] == ["c", "b"]  # a ended before
        assert [e.id for e in store.events(since=2500, until=2800)] == ["c"]
        assert [e.id for e in store.events(service="whatsapp")] == ["c"]
        assert [e.id for e in store.events(ongoing=False, target="tg")] == ["a"]
        assert store.events(since=0) == sorted(events, key=lambda e: e.start_time)


def test_probe_id_read_only(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    with Store(path, readonly=True) as store:
        assert store.probe_id("given") == "given"
        with pytest.raises(StoreError, match="no probe_id"):
            store.probe_id(None)


def test_unknown_layout_under_our_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dev.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE records (id TEXT, json TEXT)")
    db.execute(f"PRAGMA user_version = {SCHEMA}")
    db.close()
    with pytest.raises(StoreError, match=f"{path}: has an unsupported layout"):
        Store(path)
