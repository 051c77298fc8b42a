"""The SQLite store: batches, crash safety, queries, retention, events, identity, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.core.records import Event, ProbeMeta, Verdict, verdict_record
from probe.storage.store import Store, StoreError

META = ProbeMeta(probe_id="probe-test")


T0 = float(int(time.time()) - 86400)


def _verdicts(n: int, t0: float = T0, target: str = "tg") -> list[dict[str, object]]:
    return [
        verdict_record(Verdict(target, "telegram", "messaging", True, False, "accessible", "ok", t0 + i), META)
        for i in range(n)
    ]


def test_append_query_filters_and_order(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.append(_verdicts(5) + _verdicts(3, target="wa"))
        assert store.count() == 8
        assert [r["target"] for r in store.query(target="wa")] == ["wa"] * 3
        times = [r["measurement_start_time"] for r in store.query(since=T0 + 2, until=T0 + 4)]
        assert len(times) == 3 and times == sorted(times)  # tg at +2, +3; wa at +2
        assert len(list(store.query(limit=2, newest_first=True))) == 2
        assert list(store.query(record_type="check")) == []
        # a misspelt filter is an error, never a silent read of every record
        with pytest.raises(TypeError, match="targte"):
            list(store.query(targte="wa"))  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="sevice"):
            next(store.query_raw(sevice="x"))  # type: ignore[call-arg]


def test_batches_survive_a_crash_whole(tmp_path: Path) -> None:
    """A writer killed mid-run keeps every committed batch, and no half batch."""
    path = tmp_path / "crash.sqlite"
    script = f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
from probe.storage.store import Store
from tests.storage.test_store_core import _verdicts
store = Store({str(path)!r}, batch_size=10, flush_seconds=3600)
store.append(_verdicts(20))   # a full batch: committed
store.append(_verdicts(5, t0={T0 + 100}))  # pending
os._exit(9)                   # crash: no close, no flush
"""
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    with Store(path) as store:
        assert store.count() == 20


def test_retention_prunes_old_records(tmp_path: Path) -> None:
    now = T0 + 100 * 86400
    with Store(tmp_path / "r.sqlite", retention_days=30, clock=lambda: now) as store:
        store.append(_verdicts(3) + _verdicts(2, t0=now - 10))
        store.flush()
        assert store.prune() == 3
        assert store.count() == 2


def test_events_upsert_and_filters(tmp_path: Path) -> None:
    open_event = Event("e1", "p", "tg", "telegram", "tcp", "tcp_ip", 100.0, 90.0, 100.0, None, None, None, 0.9,
                       ("m1", "m2"))
    with Store(tmp_path / "e.sqlite") as store:
        store.save_events([open_event])
        assert store.events(ongoing=True) == [open_event]
        closed = Event(**{**open_event.__dict__, "end_time": 200.0, "end_low": 190.0, "end_high": 200.0})
        store.save_events([closed])
        assert store.events() == [closed] and store.events(ongoing=True) == []
        assert store.events(target="other") == []


def test_probe_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    with Store(tmp_path / "id.sqlite") as store:
        first = store.probe_id(None)
        assert first.startswith("probe-")
    with Store(tmp_path / "id.sqlite") as store:
        assert store.probe_id(None) == first
        assert store.probe_id("mine") == "mine"


def test_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=str(bad)):
        Store(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer than this probe"):
        Store(path)


def test_wal_mode(tmp_path: Path) -> None:
    with Store(tmp_path / "w.sqlite") as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
