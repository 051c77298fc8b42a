"""Store durability benchmark: what committing every finished run costs, and what kill -9 loses.

    .venv/bin/python bench/store_durability.py                      # both parts
    .venv/bin/python bench/store_durability.py --kills 10 --tree /path/to/old/checkout

Part 1, write throughput (in-process, a store file in a temporary directory on the disk of
``--dir``): records per second for the same stream of runs (``--records-per-run`` records
each, as the daemon appends them) under each commit policy, in the same run:

- ``batch-500``: the old policy, one commit per 500 records (a kill loses up to a batch);
- ``per-run FULL`` / ``per-run NORMAL``: one commit per run, ``synchronous=FULL`` or ``NORMAL``;
- ``group FULL``: the daemon's policy (:class:`probe.service.writer.StoreWriter`): runs handed
  over from another thread as fast as it can, each round commits all that arrived meanwhile.

Part 3, memory while buffering (``--buffer-seconds``, root: mounts a tmpfs): the same daemon on a
full file system for that long; every few seconds its RSS against ``probe_store_buffered_records``
and ``probe_store_buffered_bytes`` (what ``settings.store_buffer_mb`` bounds), then the disk is
freed and the time until the buffer is written is printed.

Part 2, kill -9 (``--kills`` times): a real ``python -m probe daemon`` from ``--tree``
(default: this checkout) measuring ``--targets`` targets every ``--interval`` seconds with the
fast fake measure of ``tests/service/test_daemon.py`` (no network), killed at a random moment
``--min-run``..``--max-run`` seconds after it started measuring. Per kill: the runs it reported
done (``measured`` log lines) against the verdicts of that run (its ``report_id``) in the store
after the kill; lost = reported - stored (never negative: a run committed but not yet logged
is not lost). Works against an old checkout too, which logs ``measured`` before the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.core.records import ProbeMeta, Verdict, verdict_record  # noqa: E402
from probe.service.metrics import MetricsState  # noqa: E402
from probe.service.writer import StoreWriter  # noqa: E402
from probe.storage.store import Store  # noqa: E402


def runs(count: int, per_run: int) -> list[list[dict[str, Any]]]:
    meta = ProbeMeta(probe_id="probe-bench")
    t0 = time.time() - 3600
    return [[verdict_record(Verdict(f"t{r % 200:03d}", "svc", "messaging", True, False, "accessible",
                                    "fake " * 30, t0 + r + i / 100), meta) for i in range(per_run)]
            for r in range(count)]


def timed(directory: Path, name: str, write: Callable[[Store, list[list[dict[str, Any]]]], None],
          data: list[list[dict[str, Any]]], **store_kw: Any) -> float:
    path = directory / f"{name.replace(' ', '-')}.sqlite"
    store = Store(path, retention_days=None, **store_kw)
    start = time.perf_counter()
    write(store, data)
    store.close()
    seconds = time.perf_counter() - start
    total = sum(len(r) for r in data)
    with Store(path, readonly=True) as check:
        assert check.count() == total, (name, check.count(), total)
    return total / seconds


def batched(store: Store, data: list[list[dict[str, Any]]]) -> None:
    for records in data:
        store.append(records)


def per_run(store: Store, data: list[list[dict[str, Any]]]) -> None:
    for records in data:
        store.append(records)
        store.flush()


def per_run_normal(store: Store, data: list[list[dict[str, Any]]]) -> None:
    store.db.execute("PRAGMA synchronous = NORMAL")
    per_run(store, data)


def group(store: Store, data: list[list[dict[str, Any]]]) -> None:
    writer = StoreWriter(store, MetricsState())
    done = threading.Semaphore(0)
    writer.start()
    for records in data:
        writer.submit(records, done.release)
    for _ in data:
        done.acquire()
    writer.drain()


def throughput(args: argparse.Namespace) -> None:
    data = runs(args.runs, args.records_per_run)
    with tempfile.TemporaryDirectory(prefix="probe-durability-", dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"write throughput: {args.runs} runs x {args.records_per_run} records, store in {args.dir}")
        for name, fn, kw in (
            ("batch-500 FULL (old)", batched, {"batch_size": 500, "flush_seconds": 3600}),
            ("per-run FULL", per_run, {}),
            ("per-run NORMAL", per_run_normal, {}),
            ("group FULL (daemon)", group, {"batch_size": 1 << 30, "flush_seconds": 3600}),
        ):
            rate = timed(directory, name, fn, data, **kw)
            print(f"  {name:<22} {rate:>10,.0f} records/s")


# -- kill -9 ----------------------------------------------------------------------------------------


def targets_file(path: Path, count: int, interval: float, concurrency: int) -> None:
    lines = [f"settings: {{interval: {interval}, jitter: 1.0, concurrency: {concurrency}}}", "targets:"]
    lines += [f"  - {{name: t{i:04d}, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp]}}"
              for i in range(count)]
    path.write_text("\n".join(lines) + "\n")


def measured(log: Path) -> int:
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            count += json.loads(line).get("msg") == "measured"
        except json.JSONDecodeError:
            continue  # the line the kill cut
    return count


def verdicts_by_report(store: Path) -> dict[str, int]:
    if not store.exists():
        return {}
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT json_extract(e.fields, '$.report_id'), count(*) FROM records r "
                                 "JOIN envelopes e USING (eid) WHERE r.record_type = 'verdict' GROUP BY 1"))
    finally:
        conn.close()


def orphans(store: Path) -> int:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM records WHERE eid NOT IN (SELECT eid FROM envelopes)")
                   .fetchone()[0])
    finally:
        conn.close()


def kills(args: argparse.Namespace) -> None:
    tree = Path(args.tree).resolve()
    rng = random.Random(args.seed)
    lost: list[int] = []
    done: list[int] = []
    with tempfile.TemporaryDirectory(prefix="probe-kill-", dir=args.dir) as tmp:
        directory = Path(tmp)
        targets, store = directory / "targets.yaml", directory / "probe.sqlite"
        targets_file(targets, args.targets, args.interval, args.concurrency)
        for kill in range(args.kills):
            log = directory / f"daemon-{kill}.log"
            before = verdicts_by_report(store)
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store", str(store),
                     "--listen", "127.0.0.1:0", "--measure", "tests.service.test_daemon:fake_measure"],
                    cwd=tree, stdout=subprocess.DEVNULL, stderr=err,
                    env={**os.environ, "PYTHONPATH": str(tree), "PROBE_INFORMED_CONSENT": "1"})
            try:
                deadline = time.monotonic() + 60
                while measured(log) == 0:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"the daemon did not measure: {log.read_text()[-2000:]}")
                    time.sleep(0.05)
                time.sleep(rng.uniform(args.min_run, args.max_run))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            after = verdicts_by_report(store)
            stored = sum(after.values()) - sum(before.values())
            reported = measured(log)
            done.append(reported)
            lost.append(max(0, reported - stored))
            print(f"  kill {kill + 1:>2}: reported done {reported:>5}, stored {stored:>5}, lost {lost[-1]:>4}",
                  flush=True)
        bad = orphans(store)
    print(f"kill -9 x{len(lost)} ({tree}, {args.targets} targets every {args.interval:g} s, seed {args.seed}): "
          f"lost per kill {lost}; total lost {sum(lost)} of {sum(done)} reported done; "
          f"mean {sum(lost) / len(lost):.1f}, max {max(lost)}; orphan records {bad}")


def scrape(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("probe_store_")}


def buffering(args: argparse.Namespace) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="probe-buffer-") as tmp:  # the store is on a tmpfs anyway
        directory = Path(tmp)
        disk = directory / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
        proc = None
        try:
            filler = disk / "filler"
            with filler.open("wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            targets = directory / "targets.yaml"
            targets_file(targets, args.targets, args.interval, args.concurrency)
            proc = subprocess.Popen(
                [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store", str(disk / "p.sqlite"),
                 "--listen", f"127.0.0.1:{port}", "--measure", "tests.service.test_daemon:fake_measure",
                 "--log-level", "warning"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PROBE_INFORMED_CONSENT": "1"})
            start = time.monotonic()
            print(f"buffering on a full disk: {args.targets} targets every {args.interval:g} s")
            print(f"  {'s':>4} {'rss MB':>7} {'buffered records':>16} {'buffered MB':>11} {'dropped':>7}")
            first_rss = None
            while time.monotonic() - start < args.buffer_seconds:
                time.sleep(5)
                try:
                    m = scrape(port)
                except OSError:
                    continue
                rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
                first_rss = first_rss or rss
                dropped = sum(v for k, v in m.items() if k.startswith("probe_store_records_dropped_total"))
                print(f"  {time.monotonic() - start:>4.0f} {rss:>7.1f} {m['probe_store_buffered_records']:>16.0f} "
                      f"{m['probe_store_buffered_bytes'] / 1e6:>11.1f} {dropped:>7.0f}", flush=True)
            filler.unlink()
            freed = time.monotonic()
            while scrape(port)["probe_store_buffered_records"] > 1000 and time.monotonic() - freed < 120:
                time.sleep(0.2)
            print(f"  disk freed: buffer written (to under 1,000 records) in {time.monotonic() - freed:.1f} s; "
                  f"records committed {scrape(port)['probe_store_records_total']:.0f}")
        finally:
            if proc is not None:
                proc.kill()
                proc.wait(10)
            subprocess.run(["umount", "-l", str(disk)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT), help="directory (disk) for the stores (default: the checkout)")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--records-per-run", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--tree", default=str(ROOT), help="checkout whose daemon is killed")
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--min-run", type=float, default=1.0)
    parser.add_argument("--max-run", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--buffer-seconds", type=float, default=0.0,
                        help="also run part 3 for this long (root: mounts a tmpfs)")
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_kills:
        kills(args)
    if args.buffer_seconds:
        buffering(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
