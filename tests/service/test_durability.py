"""The real daemon under real faults: kill -9 under load, a disk that fills and is freed, a
read-only store, and a restart in each state.

Each daemon is ``python -m probe daemon`` with the fast fake measure function of
``test_daemon`` (no network). A run counts as done when the daemon logs ``measured`` (with
the verdict id), which it does only after the commit returned; so every id in a ``measured``
line must be in the store after whatever happened. After every fault the store file is checked
(integrity, foreign keys, orphan records). The disk tests mount a tmpfs (root only).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from probe.service import daemon as daemon_mod
from probe.storage.store import StoreError
from tests.disk import fill, problems, remount, stored_ids, tmpfs
from tests.service.test_daemon import (
    ROOT,
    ListStore,
    free_port,
    make_daemon,
    run_for,
    scrape,
    targets_yaml,
    wait_for,
)

MEASURE = "tests.service.test_daemon:fake_measure"


def start(targets: Path, store: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    """The daemon, its log (JSON lines) going straight to a file so that a kill loses no line."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store", str(store),
             "--listen", f"127.0.0.1:{port}", "--measure", MEASURE, "--grace", "2"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PROBE_INFORMED_CONSENT": "1"},
        )


@contextlib.contextmanager
def running(targets: Path, store: Path, log: Path) -> Iterator[int]:
    """A daemon for the block (yields its metrics port), stopped with SIGTERM (exit 0) after it,
    killed if the block failed."""
    port = free_port()
    proc = start(targets, store, log, port)
    try:
        yield port
        assert proc.poll() is None  # measured through the fault, never exited
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def logged(log: Path, msg: str) -> list[dict[str, object]]:
    """The log lines with this message (a line cut by the kill is not a whole JSON object: skipped)."""
    out = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") == msg:
            out.append(entry)
    return out


def reported(log: Path) -> set[str]:
    """Verdict ids of the runs the daemon reported done."""
    return {str(entry["id"]) for entry in logged(log, "measured")}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def when(port: int, name: str, test: Callable[[float], bool]) -> str | None:
    """The /metrics text if ``name`` passes ``test`` in it, else None."""
    text = scrape(port)
    return text if test(metric(text, name)) else None


def test_kill_9_under_load_loses_no_finished_measurement(tmp_path: Path) -> None:
    targets, store = tmp_path / "targets.yaml", tmp_path / "probe.sqlite"
    targets.write_text(targets_yaml([f"t{i:03d}" for i in range(60)], interval=1.0, jitter=1.0, concurrency=16))
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills, lost_per_kill, done_per_kill = 20, [], []
    for kill in range(kills):
        log = tmp_path / f"daemon-{kill}.log"
        proc = start(targets, store, log, free_port())
        try:
            wait_for(lambda log=log: logged(log, "measured"), 30, "a first measured run")
            time.sleep(rng.uniform(0.0, 1.0))  # then a random moment under load
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        done = reported(log)
        lost = done - stored_ids(store, "verdict")
        lost_per_kill.append(len(lost))
        done_per_kill.append(len(done))
        assert problems(store) == [], f"kill {kill} (seed {seed})"
    print(f"kill -9 x{kills} (seed {seed}): runs reported done per kill {done_per_kill}; "
          f"lost per kill {lost_per_kill}")
    assert sum(lost_per_kill) == 0, f"seed {seed}: lost per kill {lost_per_kill}"
    assert sum(done_per_kill) >= kills  # every kill came under load


def test_a_disk_that_fills_and_is_freed_loses_nothing(tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(targets_yaml([f"t{i:02d}" for i in range(60)], interval=1.0, jitter=1.0, concurrency=8))
    log = tmp_path / "daemon.log"
    with tmpfs(tmp_path / "disk", "3m") as disk:
        store, filler = disk / "probe.sqlite", disk / "filler"
        fill(filler, leave=700 * 1024)
        with running(targets, store, log) as port:
            full = wait_for(lambda: when(port, "probe_store_writable", lambda v: v == 0), 60, "the disk to fill")
            assert metric(full, 'probe_store_write_errors_total{reason="disk_full"}') >= 1
            wait_for(lambda: metric(scrape(port), "probe_store_buffered_records") >= 100, 30, "records to buffer")
            before = len(stored_ids(store))
            assert problems(store) == []
            filler.unlink()  # space returns
            wait_for(lambda: metric(scrape(port), "probe_store_writable") == 1
                     and metric(scrape(port), "probe_store_buffered_records") < 100, 30, "the buffer to drain")
        after = stored_ids(store)
        assert problems(store) == []
    errors = logged(log, "store write failed")
    assert errors and errors[0]["reason"] == "disk_full" and str(store) in str(errors[0]["error"])
    assert "disk is full" in str(errors[0]["error"])
    recoveries = logged(log, "store writable again")
    assert recoveries and len(errors) <= len(recoveries) + 1  # logged once per outage, not once per failed run
    done = reported(log)
    assert done <= after and not logged(log, "store buffer full, records dropped")
    print(f"daemon on a full disk: {before} records committed before the disk was freed, {len(after)} after; "
          f"{len(done)} runs reported done, 0 lost")


def ride_out(targets: Path, store: Path, log: Path, reason: str, end_fault: Callable[[], None]) -> None:
    """Start a daemon while the fault is on: it measures and buffers (no exit), says why in /metrics;
    end the fault: everything is written; SIGTERM: exit 0, every run reported done is stored."""
    with running(targets, store, log) as port:
        text = wait_for(lambda: when(port, "probe_store_buffered_records", lambda v: v >= 20), 30,
                        f"runs buffered while {reason}")
        assert metric(text, "probe_store_writable") == 0
        assert metric(text, f'probe_store_write_errors_total{{reason="{reason}"}}') >= 1
        end_fault()
        wait_for(lambda: when(port, "probe_store_writable", lambda v: v == 1), 30, "the store to be written")
    assert reported(log) <= stored_ids(store) and problems(store) == []
    failed = logged(log, "store not writable; measuring goes on, records are kept in memory until it is")
    assert failed and failed[-1]["reason"] == reason and str(store) in str(failed[-1]["error"])


def test_a_restart_on_a_full_disk_keeps_measuring_and_writes_later(tmp_path: Path) -> None:
    targets, log = tmp_path / "targets.yaml", tmp_path / "daemon.log"
    targets.write_text(targets_yaml([f"t{i:02d}" for i in range(20)], interval=1.0, jitter=1.0))
    with tmpfs(tmp_path / "disk", "2m") as disk:
        filler = disk / "filler"
        fill(filler)  # full before the daemon starts, not even a store file yet
        ride_out(targets, disk / "probe.sqlite", log, "disk_full", filler.unlink)


def test_a_restart_on_a_read_only_store_keeps_measuring_and_writes_once_writable(tmp_path: Path) -> None:
    targets, log = tmp_path / "targets.yaml", tmp_path / "daemon.log"
    targets.write_text(targets_yaml([f"t{i:02d}" for i in range(20)], interval=1.0, jitter=1.0))
    with tmpfs(tmp_path / "disk", "4m") as disk:
        store = disk / "probe.sqlite"
        with running(targets, store, log):
            wait_for(lambda: len(logged(log, "measured")) >= 10, 30, "a first daemon's runs")
        before = stored_ids(store)
        remount(disk, "ro")

        def writable() -> None:
            assert stored_ids(store) == before and problems(store) == []  # untouched while read-only
            remount(disk, "rw")

        ride_out(targets, store, log, "read_only", writable)


class FullStore(ListStore):
    """A store on a disk that stays full: appends are buffered, every commit fails."""

    def flush(self) -> None:
        raise StoreError("/var/lib/probe/probe.sqlite: cannot write the store (the disk is full)", "disk_full")

    def close(self) -> None:
        self.closed = True
        raise StoreError("/var/lib/probe/probe.sqlite: the disk is full; 4 buffered record(s) not written",
                         "disk_full")


async def test_a_stop_during_an_outage_says_at_error_level_what_is_lost() -> None:
    stream = io.StringIO()
    daemon_mod.setup_logging(logging.INFO, stream)
    try:
        d = make_daemon(targets_yaml(["a", "b"], interval=1.0), store=FullStore())
        await run_for(d, 1.3)
    finally:
        daemon_mod.setup_logging(logging.WARNING, sys.stderr)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [e for e in entries if e["level"] == "error"]
    assert [e["msg"] for e in errors] == ["store write failed", "store close failed"]  # once, then the loss
    assert "4 buffered record(s) not written" in errors[-1]["error"]
    h = d.state.health
    assert h.measurements["ok"] == 0 and h.records_written == 0  # nothing committed: nothing done
    assert h.store_write_errors["disk_full"] >= 2 and not h.store_writable  # a commit, then the close
    assert not [e for e in entries if e["msg"] == "measured"]
