"""Export benchmark: N stored records to Parquet, JSONL and CSV (OONI measurements); time and peak RSS.

    .venv/bin/python bench/export_bench.py            # N = 1,000,000 (goal: Parquet <= 10 s, <= 300 MB)
    .venv/bin/python bench/export_bench.py --n 50000  # quicker

Records are built with ``probe.core.records.check_record``/``verdict_record`` from
CheckResult/Verdict instances whose details have the size and shape of real
ones (DNS answers, a TLS certificate summary, an HTTP summary with headers),
in the mix of a daemon run: per target DNS x2, TCP, TLS, HTTP, then a verdict.
They are appended through ``Store.append`` (timed), then each export runs in
its own subprocess so that its peak RSS is its own (``os.wait4``). Every format
writes one OONI measurement per target run (6 records here: N / 6 measurements).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.core.records import (  # noqa: E402
    CheckResult,
    ProbeMeta,
    Verdict,
    check_record,
    new_id,
    verdict_record,
)
from probe.storage.store import Store  # noqa: E402


@dataclasses.dataclass(frozen=True)
class DNSDetails:
    query: str
    qtype: str
    resolver: str
    resolver_ip: str
    rcode: str
    answers: tuple[str, ...]
    ttls: tuple[int, ...]
    bogons: tuple[str, ...] = ()
    consistent: bool | None = True


@dataclasses.dataclass(frozen=True)
class TCPDetails:
    address: str
    port: int


@dataclasses.dataclass(frozen=True)
class TLSDetails:
    address: str
    port: int
    server_name: str
    alpn: str
    version: str
    cipher: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_after: str
    control_sni: str | None = None


@dataclasses.dataclass(frozen=True)
class HTTPDetails:
    url: str
    status: int
    headers: dict[str, str]
    body_length: int
    title: str
    blockpage: str | None = None


SERVICES = ("telegram", "whatsapp", "signal", "viber", "messenger", "aws", "google", "cloudflare")


def _templates(meta: ProbeMeta, targets: int) -> list[list[dict[str, Any]]]:
    """Per target, one run's records (DNS x2, TCP, TLS, HTTP, verdict), built the real way."""
    runs: list[list[dict[str, Any]]] = []
    for i in range(targets):
        service = SERVICES[i % len(SERVICES)]
        host = f"e{i}.{service}.example.net"
        addr = f"198.18.{i % 250}.{(i * 7) % 250}"
        name = f"{service}-{i}"
        common: dict[str, Any] = {"target": name, "start_time": 0.0, "runtime": 0.05}
        checks: list[CheckResult[Any]] = [
            CheckResult("dns", input=host, ok=True, failure=None, failed_operation=None,
                        details=DNSDetails(host, "A", "system", "192.0.2.53", "NOERROR",
                                           (addr, f"198.18.{i % 250}.1"), (300, 300)),
                        timings={"resolve": 0.012}, **common),
            CheckResult("dns", input=host, ok=True, failure=None, failed_operation=None,
                        details=DNSDetails(host, "A", "https://dns.example/dns-query",
                                           "192.0.2.1", "NOERROR", (addr,), (60,)),
                        timings={"resolve": 0.041}, **common),
            CheckResult("tcp", input=f"{addr}:443", ok=True, failure=None, failed_operation=None,
                        details=TCPDetails(addr, 443), timings={"connect": 0.021}, **common),
            CheckResult("tls", input=f"{addr}:443", ok=True, failure=None, failed_operation=None,
                        details=TLSDetails(addr, 443, host, "h2", "TLSv1.3",
                                           "TLS_AES_256_GCM_SHA384", f"CN=*.{service}.example.net",
                                           "CN=Example Issuing CA G2,O=Example Trust,C=US",
                                           (f"*.{service}.example.net", f"{service}.example.net"),
                                           "2026-12-31T23:59:59Z"),
                        timings={"connect": 0.02, "tls_handshake": 0.061}, **common),
            CheckResult("http", input=f"https://{host}/", ok=i % 9 != 0,
                        failure=None if i % 9 else "connection_reset",
                        failed_operation=None if i % 9 else "http_round_trip",
                        details=HTTPDetails(f"https://{host}/", 200,
                                            {"content-type": "text/html; charset=utf-8",
                                             "server": "nginx", "cache-control": "no-store",
                                             "strict-transport-security": "max-age=31536000"},
                                            48213, f"{service.title()} Web"),
                        timings={"connect": 0.02, "tls_handshake": 0.06, "http": 0.144}, **common),
        ]
        recs = [check_record(c, meta, service, "messaging") for c in checks]
        verdict = Verdict(name, service, "messaging", i % 9 != 0, False if i % 9 else "tcp_ip",
                          "ok" if i % 9 else "tcp-reset", "all steps succeeded", 0.0,
                          evidence=tuple(r["id"] for r in recs))
        runs.append([*recs, verdict_record(verdict, meta)])
    return runs


def generate(path: Path, n: int, targets: int = 60, interval: float = 300.0) -> float:
    """Append ``n`` records through Store.append; returns the seconds it took."""
    from probe.core.records import format_time

    meta = ProbeMeta(probe_id="probe-bench", probe_cc="RU", probe_asn="AS12389",
                     probe_network_name="Example Telecom")
    templates = _templates(meta, targets)
    per_run = sum(len(t) for t in templates)
    runs = (n + per_run - 1) // per_run
    t0 = time.time() - runs * interval
    rng = random.Random(1)
    made = 0
    started = time.perf_counter()
    with Store(path, retention_days=None, batch_size=5000) as store:
        for run in range(runs):
            report_id = new_id()
            base = t0 + run * interval
            batch: list[dict[str, Any]] = []
            for k, group in enumerate(templates):
                for j, template in enumerate(group):
                    if made >= n:
                        break
                    record = dict(template)
                    record["id"] = new_id()
                    record["report_id"] = report_id
                    record["measurement_start_time"] = format_time(base + k * 0.5 + j * 0.05)
                    record["test_runtime"] = round(rng.uniform(0.01, 0.5), 6)
                    batch.append(record)
                    made += 1
            store.append(batch)
    return time.perf_counter() - started


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from probe.storage.export import export
from probe.storage.store import Store
with Store({store!r}, readonly=True) as store:
    summary = export(store, {fmt!r}, {out!r}, workers={workers})
print(summary.rows, summary.files, round(summary.seconds, 3))
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (the export's worker processes), from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue  # gone meanwhile
    return total


def run_export(store: Path, fmt: str, out: Path, workers: int = 1) -> tuple[float, float, float, str]:
    """Export in a subprocess; returns (wall s, CPU s of it and its workers, peak RSS MB of it and
    its workers together, sampled every 20 ms, child's output)."""
    code = CHILD.format(root=str(ROOT), store=str(store), fmt=fmt, out=str(out), workers=workers)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = 0
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # not reaped
        peak = max(peak, _tree_rss(child.pid))
        time.sleep(0.02)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    output = child.stdout.read().strip() if child.stdout else ""
    if child.returncode != 0:
        raise SystemExit(f"{fmt} export failed with exit code {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, max(peak / 2**20, usage.ru_maxrss / 1024), output


def _size(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="stored records")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --dir: reuse a store of N records left by an earlier run")
    parser.add_argument("--formats", default="parquet,jsonl,csv", help="comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="export worker processes (probe export --workers)")
    args = parser.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store = work / "bench.sqlite"
        if args.reuse and store.exists():
            with Store(store, readonly=True) as existing:
                reused = existing.count() == args.n
        else:
            reused = False
        if reused:
            print(f"store: reusing {store} ({args.n:,} records, {_size(store):.0f} MB)")
        else:
            for stale in work.glob("bench.sqlite*"):
                stale.unlink()
            seconds = generate(store, args.n)
            print(f"store: {args.n:,} records appended in {seconds:.1f} s "
                  f"({args.n / seconds:,.0f}/s), file {_size(store):.0f} MB")
        names = {"parquet": "out-parquet", "jsonl": "out.jsonl", "csv": "out.csv"}
        for fmt in args.formats.split(","):
            out = work / names[fmt]
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
            wall, cpu, rss, output = run_export(store, fmt, out, args.workers)
            rows, files, inner = output.split()
            goal = "  (goal <= 10 s, <= 300 MB)" if fmt == "parquet" else ""
            print(f"{fmt:8s}: {int(rows):,} measurements, {files} file(s), {_size(out):.0f} MB; "
                  f"export {float(inner):.2f} s, process {wall:.2f} s wall / {cpu:.2f} s CPU, "
                  f"peak RSS {rss:.0f} MB{goal}")
        print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
