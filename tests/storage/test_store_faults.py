"""The store under real faults: a tiny tmpfs that fills and is freed, a read-only file system,
a restart in each state, and damaged files read by ``probe show`` / ``probe export``.

After every fault the file is checked with ``PRAGMA integrity_check``, the foreign-key check
and an orphan count (:func:`tests.disk.problems`). The disk tests mount a tmpfs (root only).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from probe.cli import main
from probe.core.records import ProbeMeta, Verdict, verdict_record
from probe.storage import export as export_mod
from probe.storage.store import Store, StoreBufferFull, StoreError
from tests.disk import fill, problems, remount, stored_ids, tmpfs

T0 = float(int(time.time()) - 3600)


def run_records(run: int, n: int = 47) -> list[dict[str, object]]:
    """One run's verdicts: a fresh report_id per run, so every run brings a new envelope (the case
    where a rolled-back envelope id used to stay cached)."""
    meta = ProbeMeta(probe_id="probe-faults")
    return [verdict_record(Verdict(f"t{i % 7}", "svc", "messaging", True, False, "accessible", "ok " * 20,
                                   T0 + run + i / 1000), meta) for i in range(n)]


def committed(path: Path) -> int:
    return len(stored_ids(path))


def _write(store: Store, records: list[dict[str, object]]) -> str | None:
    """Append and commit; the reason it failed, or None."""
    try:
        store.append(records)
        store.flush()
    except StoreError as exc:
        return exc.reason
    return None


def test_a_full_disk_keeps_every_record_and_writes_them_when_space_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        path, filler = disk / "probe.sqlite", disk / "filler"
        fill(filler, leave=512 * 1024)
        store = Store(path, retention_days=None, batch_size=100, retry_seconds=0)
        appended: set[str] = set()
        errors: list[StoreError] = []
        run = 0
        while len(errors) < 20 and run < 400:  # append throughout: before, during the fault
            records = run_records(run)
            try:
                store.append(records)
            except StoreError as exc:
                errors.append(exc)
            appended |= {str(r["id"]) for r in records}
            run += 1
        assert errors, "the disk never filled"
        assert {e.reason for e in errors} == {"disk_full"}
        assert str(path) in str(errors[0]) and "disk is full" in str(errors[0])
        before = committed(path)
        assert 0 < before < len(appended) and store.buffered == len(appended) - before  # nothing dropped
        assert problems(path) == []

        # show and export work on the full disk, from what is committed
        assert main(["show", "--store", str(path), "--json", "--limit", "100000"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == before
        out = tmp_path / "full.jsonl"
        assert main(["export", "--store", str(path), "--out", str(out)]) == 0
        assert len(out.read_text().splitlines()) == before

        filler.unlink()  # space returns
        last = run_records(run)
        store.append(last)  # the next append commits everything buffered
        appended |= {str(r["id"]) for r in last}
        store.flush()
        after = committed(path)
        assert store.buffered == 0 and store.dropped == 0
        assert stored_ids(path) == appended and after == len(appended)
        assert problems(path) == []
        store.close()
    print(f"disk full: {len(appended)} records appended in {run + 1} calls, {len(errors)} failed commits; "
          f"committed before the disk was freed {before}, after {after}; dropped 0")


def test_a_restart_on_a_full_disk_opens_reads_and_writes_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path, filler = disk / "probe.sqlite", disk / "filler"
        with Store(path, retention_days=None) as store:
            for run in range(5):
                store.append(run_records(run))
        fill(filler)  # the disk is full before the restart
        store = Store(path, retention_days=None, retry_seconds=0, retry_open=True)
        runs = [run_records(run) for run in range(5, 40)]
        reasons = [_write(store, records) for records in runs]
        assert "disk_full" in reasons and set(reasons) <= {"disk_full", None}, reasons
        assert problems(path) == []
        assert main(["show", "--store", str(path), "--json", "--limit", "1000"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == committed(path)
        # closing on a full disk says what is lost: the records only in memory
        with pytest.raises(StoreError, match=r"disk is full.*buffered record\(s\) not written"):
            store.close()
        assert problems(path) == []
        store = Store(path, retention_days=None, retry_seconds=0, retry_open=True)  # restart again, then free
        assert {_write(store, records) for records in runs} == {"disk_full"}  # still full
        filler.unlink()
        store.flush()
        assert stored_ids(path) >= {str(r["id"]) for records in runs for r in records}
        assert problems(path) == []
        store.close()


def test_the_buffer_bound_refuses_whole_calls_and_counts_them(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path, filler = disk / "probe.sqlite", disk / "filler"
        store = Store(path, retention_days=None, batch_size=1, retry_seconds=0, buffer_bytes=200_000)
        store.append(run_records(0))
        fill(filler)
        kept: set[str] = set()
        refusals: list[StoreBufferFull] = []
        for run in range(1, 60):
            records = run_records(run)
            try:
                store.append(records)
            except StoreBufferFull as exc:
                refusals.append(exc)
                continue
            except StoreError:
                pass
            kept |= {str(r["id"]) for r in records}
        assert refusals and store.dropped == 47 * len(refusals)
        assert all("dropped" in str(e) and e.reason == "disk_full" for e in refusals)
        assert store.buffered_bytes <= 200_000 and store.buffered == len(kept)
        filler.unlink()
        store.flush()
        assert stored_ids(path) >= kept and problems(path) == []
        store.close()


def test_a_read_only_store_names_the_problem_buffers_and_writes_once_writable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        path = disk / "probe.sqlite"
        with Store(path, retention_days=None) as store:
            store.append(run_records(0))
        remount(disk, "ro")
        with pytest.raises(StoreError) as caught:  # a restart in this state: a clear error
            Store(path)
        assert caught.value.reason == "read_only" and str(path) in str(caught.value)
        assert "read-only" in str(caught.value)
        store = Store(path, retention_days=None, retry_seconds=0, retry_open=True)  # the daemon's way
        assert store.last_error is not None and store.last_error.reason == "read_only"
        store.append(run_records(1))
        with pytest.raises(StoreError, match="read-only"):
            store.flush()
        assert main(["show", "--store", str(path), "--json", "--limit", "1000"]) == 0  # readable
        assert len(capsys.readouterr().out.splitlines()) == 47
        remount(disk, "rw")
        store.flush()
        assert committed(path) == 94 and problems(path) == []
        store.close()


# -- damaged stores: show and export never crash, they name the problem (exit 2) -----------------


def _store_with_runs(path: Path, runs: int) -> None:
    with Store(path, retention_days=None) as store:
        for run in range(runs):
            store.append(run_records(run))


def test_records_pointing_to_a_missing_envelope_are_skipped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "orphans.sqlite"
    _store_with_runs(path, 3)
    conn = sqlite3.connect(path)  # what an older probe left after a failed rollback on a full disk
    conn.execute("DELETE FROM envelopes WHERE eid = (SELECT min(eid) FROM envelopes)")
    conn.commit()
    conn.close()
    assert main(["show", "--store", str(path), "--json", "--limit", "1000"]) == 2
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 94  # the two intact runs are shown
    assert f"store {path}: 47 record(s) reference a missing envelope" in captured.err
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"out.{fmt}"
        assert main(["export", "--store", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "94 measurements to" in err  # one per run
        assert "47 record(s) reference a missing envelope" in err
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 94
    monkeypatch.setattr(export_mod, "PARALLEL_MIN", 1)  # slices in worker processes name it too
    assert main(["export", "--store", str(path), "--out", str(tmp_path / "par.jsonl"), "--workers", "3"]) == 2
    assert "47 record(s) reference a missing envelope" in capsys.readouterr().err
    assert len((tmp_path / "par.jsonl").read_text().splitlines()) == 94
    with Store(path, readonly=True) as store:
        assert store.check() == [f"store {path}: 47 record(s) reference a missing envelope"]


def test_a_corrupt_file_is_named_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "corrupt.sqlite"
    _store_with_runs(path, 20)
    size = path.stat().st_size
    with path.open("r+b") as f:  # overwrite pages in the middle of the file (the header stays)
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    assert main(["show", "--store", str(path), "--json", "--limit", "1000"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("corrupt" in err or "malformed" in err) and "Traceback" not in err
    assert main(["export", "--store", str(path), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_check_is_clean_after_normal_use(tmp_path: Path) -> None:
    path = tmp_path / "clean.sqlite"
    _store_with_runs(path, 2)
    with Store(path) as store:
        assert store.check() == []
    assert json.loads(json.dumps(problems(path))) == []
