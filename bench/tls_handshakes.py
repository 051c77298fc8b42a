"""Benchmark: N TLS handshake checks by the probe and by blackbox_exporter, against one local server.

Usage::

    .venv/bin/python bench/tls_handshakes.py [--n 2000] [--concurrency 100] [--profile 25] [--json]

Everything runs on 127.0.0.1. Each party is its own process, so that its CPU is measured alone:

- the TLS server (``bench/_tls_roles.py server``: asyncio + ssl, ECDSA certificate from a trustme CA);
  its CPU is measured too, only to show it is not the bottleneck, and is counted for no one;
- the probe (``_tls_roles.py probe``): ``probe.checks.tls.handshake`` with a ``Context`` whose
  ``settings.ca_bundle`` is the test CA; CPU = its own ``getrusage`` across the N checks;
- ``prometheus-blackbox-exporter`` with a ``tcp`` module, ``tls: true`` and the CA in ``tls_config``;
  CPU = ``utime + stime`` from ``/proc/<pid>/stat`` across the N checks, which a separate load
  generator (``_tls_roles.py loadgen``, not counted) asks for with the same concurrency.

Peak RSS is each process's ``VmHWM``. Handshake times: the probe's ``timings["tls_handshake"]`` (and
the whole check's ``runtime``); blackbox's ``probe_duration_seconds`` (its tcp prober has no phase
gauge: connect + handshake). "uncontended" is the median of a few checks run one after another
before the concurrent run. The figures are printed as ``name: probe blackbox`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "bench" / "_tls_roles.py"
EXPORTER = "/usr/bin/prometheus-blackbox-exporter"
SNI = "bench.test"
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    """A role process that speaks JSON lines; killed at the end whatever happens."""

    proc: subprocess.Popen[str]
    name: str

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON event, or an error naming the role (never a hang)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited (rc={self.proc.wait(5)})")
            if line.startswith("{"):
                event: dict[str, Any] = json.loads(line)
                if event["event"] == "error":
                    raise RuntimeError(f"{self.name}: {event['message']}")
                return event
        raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()


@dataclass
class Processes:
    probe_root: str = str(ROOT)
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    def role(self, name: str, *argv: str) -> Child:
        path = os.pathsep.join(p for p in (self.probe_root, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "BENCH_PROBE_ROOT": self.probe_root}
        proc = subprocess.Popen(
            [sys.executable, str(ROLES), name, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env,
        )
        self.children.append(proc)
        return Child(proc, name)

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        self.children.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def processes(probe_root: str) -> Iterator[Processes]:
    procs = Processes(probe_root)
    try:
        yield procs
    finally:
        procs.stop_all()


@dataclass(frozen=True)
class Side:
    """One party's figures."""

    ok: int
    n: int
    cpu: float
    wall: float
    peak_rss_kb: int
    idle_rss_kb: int
    times: list[float]  # the measured handshake time of each completed check, in seconds
    single: list[float]  # uncontended, one after another
    server_cpu: float
    failures: dict[str, int]
    process_cpu: float | None = None  # the probe's whole process: interpreter start and imports too
    driver_cpu: float | None = None  # blackbox's load generator (not counted for anyone)

    @property
    def cpu_per_check(self) -> float:
        return self.cpu / max(self.ok, 1)


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_probe(procs: Processes, args: argparse.Namespace, server: Child, port: int, ca: Path) -> tuple[Side, Any]:
    child = procs.role(
        "probe", "--port", str(port), "--n", str(args.n), "--concurrency", str(args.concurrency),
        "--single", str(args.single), "--ca", str(ca), "--sni", SNI, "--timeout", str(args.timeout),
        "--profile", str(args.profile), "--loop", args.loop, *(["--cert-cache"] if args.cert_cache else []),
    )
    ready = child.read(60)
    server0 = proc_cpu(server.proc.pid)
    child.go()
    done = child.read(args.deadline)
    server_cpu = proc_cpu(server.proc.pid) - server0
    assert child.proc.stdin is not None
    child.proc.stdin.close()
    _, _, usage = os.wait4(child.proc.pid, 0)  # this child alone, from its start
    child.proc.returncode = 0
    side = Side(
        ok=done["ok"], n=args.n, cpu=done["cpu"], wall=done["wall"], peak_rss_kb=usage.ru_maxrss,
        idle_rss_kb=ready["rss_kb"], times=done["handshakes"], single=ready["single"], server_cpu=server_cpu,
        failures=done["failures"], process_cpu=usage.ru_utime + usage.ru_stime,
    )
    return side, done


def exporter_config(directory: Path, ca: Path) -> Path:
    path = directory / "blackbox.yml"
    path.write_text(
        "modules:\n"
        "  tls:\n"
        "    prober: tcp\n"
        "    timeout: 10s\n"
        "    tcp:\n"
        "      preferred_ip_protocol: ip4\n"
        "      tls: true\n"
        "      tls_config:\n"
        f"        ca_file: {ca}\n"
        f"        server_name: {SNI}\n"
    )
    return path


def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"blackbox_exporter exited: {proc.stderr.read() if proc.stderr else ''}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/-/healthy")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    raise TimeoutError("blackbox_exporter did not become healthy")


def daemon_targets(directory: Path, port: int, ca: Path) -> Path:
    """One TLS target for ``probe daemon``, measured only on demand (its own interval is a day)."""
    path = directory / "targets.yaml"
    path.write_text(
        f"settings: {{ca_bundle: {ca}, interval: 86400, jitter: 0, timeouts: {{connect: 10, tls: 10}}}}\n"
        "targets:\n"
        f"  - {{name: bench, service: bench, category: bench, host: {SNI}, addresses: [127.0.0.1], "
        f"ports: [{port}], checks: [tls]}}\n"
    )
    return path


def run_exporter(procs: Processes, args: argparse.Namespace, server: Child, port: int, argv: list[str],
                 exporter_port: int, path: str | None = None) -> Side:
    """Drive an HTTP exporter (blackbox_exporter, or the probe daemon's /probe) with the load generator."""
    exporter = procs.spawn(argv)
    wait_healthy(exporter_port, exporter)
    load = procs.role(
        "loadgen", "--port", str(port), "--n", str(args.n), "--concurrency", str(args.concurrency),
        "--single", str(args.single), "--exporter-port", str(exporter_port), "--timeout", str(args.timeout),
        *(["--path", path] if path else []),
    )
    ready = load.read(60)
    idle_rss = proc_status_kb(exporter.pid, "VmRSS")
    cpu0, server0, driver0 = proc_cpu(exporter.pid), proc_cpu(server.proc.pid), proc_cpu(load.proc.pid)
    load.go()
    done = load.read(args.deadline)
    cpu, server_cpu = proc_cpu(exporter.pid) - cpu0, proc_cpu(server.proc.pid) - server0
    driver_cpu = proc_cpu(load.proc.pid) - driver0
    return Side(
        ok=done["ok"], n=args.n, cpu=cpu, wall=done["wall"], peak_rss_kb=proc_status_kb(exporter.pid, "VmHWM"),
        idle_rss_kb=idle_rss, times=done["durations"], single=ready["single"], server_cpu=server_cpu,
        failures=done["failures"], driver_cpu=driver_cpu,
    )


def run_blackbox(procs: Processes, args: argparse.Namespace, server: Child, port: int, ca: Path,
                 directory: Path) -> Side:
    exporter_port = free_port()
    return run_exporter(procs, args, server, port, [
        EXPORTER, f"--config.file={exporter_config(directory, ca)}",
        f"--web.listen-address=127.0.0.1:{exporter_port}", "--log.level=warn",
    ], exporter_port)


def run_daemon(procs: Processes, args: argparse.Namespace, server: Child, port: int, ca: Path,
               directory: Path) -> Side:
    """The probe as Prometheus uses it at scale: a real ``probe daemon`` answering /probe?target=NAME."""
    daemon_port = free_port()
    return run_exporter(procs, args, server, port, [
        sys.executable, "-m", "probe", "daemon", "--targets", str(daemon_targets(directory, port, ca)),
        "--no-store", "--listen", f"127.0.0.1:{daemon_port}", "--log-level", "error",
        "--i-consent",
    ], daemon_port, path="/probe?target=bench")


def ms(value: float) -> str:
    return f"{value * 1000:.3f}"


def report(args: argparse.Namespace, probe: Side, blackbox: Side | None) -> list[str]:
    sides = [probe] + ([blackbox] if blackbox else [])

    def row(name: str, *values: str) -> str:
        return f"{name + ':':<28}" + "".join(f"{v:>14}" for v in values)

    lines = [
        f"TLS handshakes: n={args.n} concurrency={args.concurrency} server=127.0.0.1 (python asyncio+ssl, "
        f"ECDSA P-256, TLS 1.3) cpus={os.cpu_count()} probe_loop={args.loop} cert_cache={args.cert_cache} "
        f"probe_root={args.probe_root} probe_side={'daemon /probe' if args.via_daemon else 'in-process checks'}",
        row("side", "probe", *(["blackbox"] if blackbox else [])),
        row("completed", *(f"{s.ok}/{s.n}" for s in sides)),
        row("cpu_s", *(f"{s.cpu:.3f}" for s in sides)),
        row("cpu_ms_per_check", *(ms(s.cpu_per_check) for s in sides)),
        row("wall_s", *(f"{s.wall:.3f}" for s in sides)),
        row("checks_per_s", *(f"{s.ok / s.wall:.1f}" for s in sides)),
        row("peak_rss_mb", *(f"{s.peak_rss_kb / 1024:.1f}" for s in sides)),
        row("idle_rss_mb", *(f"{s.idle_rss_kb / 1024:.1f}" for s in sides)),
        row("handshake_median_ms", *(ms(statistics.median(s.times) if s.times else math.nan) for s in sides)),
        row("handshake_p99_ms", *(ms(quantile(s.times, 0.99)) for s in sides)),
        row("uncontended_median_ms", *(ms(statistics.median(s.single) if s.single else math.nan) for s in sides)),
        row("server_cpu_ms_per_check", *(ms(s.server_cpu / max(s.ok, 1)) for s in sides)),
        *([f"probe process, start to end (interpreter and imports too): cpu_s={probe.process_cpu:.3f}"]
          if probe.process_cpu is not None else []),
        *([f"blackbox load generator (not counted): cpu_ms_per_check={ms(blackbox.driver_cpu / max(blackbox.ok, 1))}"]
          if blackbox and blackbox.driver_cpu is not None else []),
        ("handshake = probe_duration_seconds of each /probe answer (queueing, connect, handshake) for both"
         if args.via_daemon else "handshake = probe: timings['tls_handshake'] (connect excluded); "
         "blackbox: probe_duration_seconds (connect + handshake)"),
    ]
    for name, side in (("probe", probe), ("blackbox", blackbox)):
        if side and side.failures:
            lines.append(f"{name} failures: {side.failures}")
    if blackbox:
        ratio = probe.cpu_per_check / blackbox.cpu_per_check if blackbox.cpu_per_check else math.inf
        lines.append(f"ratio_cpu_per_check_probe_over_blackbox: {ratio:.2f} (goal <= 1.0)")
    return lines


def _default_loop() -> str:
    """The loop the product uses: probe.service.runner.run_loop picks uvloop when it is importable."""
    import importlib.util

    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TLS handshake checks: probe vs blackbox_exporter, CPU per check.")
    parser.add_argument("--n", type=int, default=2000, help="checks per side (default 2000)")
    parser.add_argument("--concurrency", type=int, default=100, help="checks in flight (default 100)")
    parser.add_argument("--single", type=int, default=20, help="uncontended checks for the baseline (default 20)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-check timeout, s")
    parser.add_argument("--deadline", type=float, default=300.0, help="bound on each side's whole run, s")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="cProfile the probe's run and print this many rows (CPU figures then include "
                        "the profiler's overhead)")
    parser.add_argument("--probe-root", default=str(ROOT),
                        help="directory holding the probe package to measure (a prototype copy, say)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default=_default_loop(),
                        help="the probe's event loop (default: uvloop when installed, as `probe run` does)")
    parser.add_argument("--cert-cache", action="store_true",
                        help="memoise parse_certificate (the core now does; kept for old checkouts)")
    parser.add_argument("--no-blackbox", action="store_true", help="probe side only")
    parser.add_argument("--via-daemon", action="store_true",
                        help="the probe side is a real `probe daemon` answering /probe?target=NAME to the same load "
                        "generator as blackbox_exporter (Prometheus' way of using it at scale), not checks in-process")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 100_000 or not 1 <= args.concurrency <= 1000:
        parser.error("--n must be 1..100000 and --concurrency 1..1000")
    use_blackbox = not args.no_blackbox
    if use_blackbox and not shutil.which(EXPORTER):
        parser.error(f"{EXPORTER} not found (apt-get install prometheus-blackbox-exporter, or --no-blackbox)")

    probe_root = str(Path(args.probe_root).resolve())
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, processes(probe_root) as procs:
        directory = Path(tmp)
        ca = trustme.CA()
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        leaf = ca.issue_cert(SNI)
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
        server = procs.role("server", "--cert", str(cert_file), "--key", str(key_file))
        port = server.read(30)["port"]

        if args.via_daemon:
            probe, done = run_daemon(procs, args, server, port, ca_file, directory), {}
        else:
            probe, done = run_probe(procs, args, server, port, ca_file)
        blackbox = run_blackbox(procs, args, server, port, ca_file, directory) if use_blackbox else None

    for line in report(args, probe, blackbox):
        print(line)
    if args.profile and done.get("profile"):
        print("\n# cProfile of the probe's concurrent run\n" + done["profile"])
    if args.json:
        print(json.dumps({
            "n": args.n, "concurrency": args.concurrency,
            **{name: {
                "ok": s.ok, "cpu_s": s.cpu, "cpu_per_check_s": s.cpu_per_check, "wall_s": s.wall,
                "peak_rss_kb": s.peak_rss_kb, "handshake_median_s": statistics.median(s.times) if s.times else None,
                "handshake_p99_s": quantile(s.times, 0.99), "uncontended_s": statistics.median(s.single),
                "server_cpu_s": s.server_cpu, "failures": s.failures,
            } for name, s in (("probe", probe), ("blackbox", blackbox)) if s},
        }))
    return 0 if probe.ok == args.n and (blackbox is None or blackbox.ok == args.n) else 1


if __name__ == "__main__":
    sys.exit(main())
