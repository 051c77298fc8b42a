"""Daemon benchmark: 5,000 checks per minute against loopback servers, for N minutes.

    .venv/bin/python bench/daemon_bench.py --minutes 10

Starts (1) a TLS/HTTP server process on 127.0.0.1 (trustme certificate), (2) the
real ``probe daemon`` with the real pipeline, measuring enough targets (tcp, tls,
http: 3 check records per run) on a 60 s interval to make the asked checks per
minute, and samples every few seconds:

- the daemon's CPU share (of one core) and RSS, from /proc;
- /metrics scrape latency while it works (one scrape per second);
- schedule drift: how late runs start against their plan, from the daemon's own
  ``probe_scheduler_lag_seconds`` histogram (bucket-interpolated quantiles);
- checks per minute actually done (``probe_checks_total``).

Prints one line per minute and a summary. Loopback only; every process is killed
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the server process ---------------------------------------------------------------------------


def make_ca(directory: Path) -> None:
    """The test CA (ca.pem, for the daemon) and the server's key and chain (server.pem)."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf = ca.issue_cert("good.test")
    with (directory / "server.pem").open("wb") as f:
        f.write(leaf.private_key_pem.bytes())
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())


def serve(directory: Path, port: int, index: int) -> None:
    """One of several TLS HTTP server processes sharing 127.0.0.1:port (SO_REUSEPORT): the kernel
    spreads connections over them, so the servers are not what the benchmark measures."""
    import ssl

    sys.path.insert(0, str(ROOT))
    from tests.loopback import http_app

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(directory / "server.pem"))

    async def main() -> None:
        server = await asyncio.start_server(http_app, "127.0.0.1", port, ssl=context, reuse_port=True, backlog=4096)
        async with server:
            (directory / f"ready-{index}").write_text(str(port))
            await asyncio.sleep(10 * 86400)

    asyncio.run(main())


# -- sampling ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def scrape(port: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return time.perf_counter() - t0, text


def diagnose(text: str) -> tuple[list[float], dict[str, float], float, float]:
    """(per-target last run durations, failures by label, in flight, queue depth): why runs are slow."""
    durations: list[float] = []
    failures: dict[str, float] = {}
    in_flight = depth = 0.0
    for line in text.splitlines():
        if line.startswith("probe_measurement_duration_seconds{"):
            durations.append(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("probe_check_failures_total{"):
            label = line.split('failure="')[1].split('"')[0] + "/" + line.split('check="')[1].split('"')[0]
            failures[label] = failures.get(label, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("probe_measurements_in_flight "):
            in_flight = float(line.rsplit(" ", 1)[1])
        elif line.startswith("probe_scheduler_queue_depth "):
            depth = float(line.rsplit(" ", 1)[1])
    return durations, failures, in_flight, depth


def buckets_of(family: str, text: str) -> dict[float, float]:
    """A histogram's cumulative buckets (le -> count) from an exposition."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(family + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def parse(text: str) -> tuple[dict[float, float], float, float]:
    """(lag buckets le -> cumulative count, total checks, measurements)."""
    buckets: dict[float, float] = {}
    checks = runs = 0.0
    for line in text.splitlines():
        if line.startswith("probe_scheduler_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("probe_checks_total{"):
            checks += float(line.rsplit(" ", 1)[1])
        elif line.startswith("probe_measurements_total{"):
            runs += float(line.rsplit(" ", 1)[1])
    return buckets, checks, runs


def quantile(q: float, now: dict[float, float], before: dict[float, float]) -> float:
    """histogram_quantile over the delta of two cumulative bucket sets (linear in a bucket)."""
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return 0.0
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
    return prev_bound


# -- main ---------------------------------------------------------------------------------------------


def targets_file(directory: Path, port: int, count: int, interval: float, concurrency: int) -> Path:
    lines = [
        "settings:",
        f"  ca_bundle: {directory / 'ca.pem'}",
        f"  interval: {interval}",
        "  jitter: 1.0",
        f"  concurrency: {concurrency}",
        "  timeouts: {dns: 2, connect: 2, tls: 2, http: 4}",
        "targets:",
        f"  - {{name: ctl, service: control, category: control, addresses: [127.0.0.1], ports: [{port}], "
        "checks: [tcp]}",
    ]
    for i in range(count):
        lines.append(
            f"  - {{name: t{i:05d}, service: svc{i % 20:02d}, category: messaging, addresses: [127.0.0.1], "
            f"sni: good.test, ports: [{port}], checks: [tcp, tls, http], urls: ['https://good.test:{port}/']}}"
        )
    path = directory / "targets.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--checks-per-minute", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between CPU/RSS samples")
    parser.add_argument("--diagnose", action="store_true",
                        help="also print per minute: run durations, in-flight runs, queue depth, new failures")
    parser.add_argument("--servers", type=int, default=2, help="server processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--serve", nargs=3, metavar=("DIR", "PORT", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), int(args.serve[2]))
        return 0
    checks_per_run = 3
    count = round(args.checks_per_minute * args.interval / 60 / checks_per_run)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        directory = Path(tmp)
        try:
            make_ca(directory)
            port = _free_port()
            servers = [subprocess.Popen([sys.executable, __file__, "--serve", tmp, str(port), str(i)])
                       for i in range(args.servers)]
            procs += servers
            deadline = time.monotonic() + 30
            while not all((directory / f"ready-{i}").exists() for i in range(args.servers)):
                if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
                    raise SystemExit("the loopback servers did not start")
                time.sleep(0.1)
            targets = targets_file(directory, port, count, args.interval, args.concurrency)
            metrics_port = _free_port()
            daemon = subprocess.Popen(
                [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store",
                 str(directory / "probe.sqlite"), "--listen", f"127.0.0.1:{metrics_port}", "--log-level", "warning",
                 "--i-consent"],
                cwd=ROOT, stderr=subprocess.DEVNULL,
            )
            procs.append(daemon)
            _wait_metrics(metrics_port)
            print(f"{count} targets x {checks_per_run} checks every {args.interval:g}s "
                  f"= {count * checks_per_run * 60 / args.interval:.0f} checks/min planned; "
                  f"concurrency {args.concurrency}; {args.minutes:g} min; {os.cpu_count()} CPUs shared with "
                  f"{args.servers} server processes (SO_REUSEPORT)")
            print(f"{'min':>4} {'cpu%':>6} {'rss MB':>7} {'srv cpu%':>8} {'checks/min':>10} {'runs/min':>8} "
                  f"{'scrape p50 ms':>13} {'p99 ms':>7} {'max ms':>7} {'lag p50 s':>9} {'p95 s':>6} {'p99 s':>6}")
            rows = _run(args, daemon.pid, [s.pid for s in servers], metrics_port)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
            _summary(rows, code)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    return 0


def _run(args: argparse.Namespace, pid: int, server_pids: list[int], port: int) -> list[dict[str, float]]:
    start = time.monotonic()
    end = start + args.minutes * 60
    rows: list[dict[str, float]] = []
    minute_start = start
    cpu0, scpu0 = cpu_seconds(pid), sum(cpu_seconds(p) for p in server_pids)
    _, text = scrape(port)
    buckets0, checks0, runs0 = parse(text)
    latencies: list[float] = []
    rss: list[float] = []
    flights: list[float] = []
    depths: list[float] = []
    failures0 = diagnose(text)[1]
    stall0, store0 = buckets_of("probe_event_loop_lag_seconds", text), buckets_of("probe_store_write_seconds", text)
    next_sample = start
    while True:
        latency, text = scrape(port)
        latencies.append(latency)
        _, _, flight, depth = diagnose(text)
        flights.append(flight)
        depths.append(depth)
        if time.monotonic() >= next_sample:
            rss.append(rss_mb(pid))
            next_sample += args.sample
        now = time.monotonic()
        if now - minute_start >= 60 or (now >= end and now - minute_start > 5):
            buckets, checks, runs = parse(text)
            cpu, scpu, elapsed = cpu_seconds(pid), sum(cpu_seconds(p) for p in server_pids), now - minute_start
            row = {
                "minute": len(rows) + 1, "cpu": 100 * (cpu - cpu0) / elapsed, "rss": max(rss) if rss else 0.0,
                "server_cpu": 100 * (scpu - scpu0) / elapsed,
                "checks": (checks - checks0) * 60 / elapsed, "runs": (runs - runs0) * 60 / elapsed,
                "scrape_p50": 1000 * statistics.median(latencies),
                "scrape_p99": 1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))],
                "scrape_max": 1000 * max(latencies),
                "lag_p50": quantile(0.5, buckets, buckets0), "lag_p95": quantile(0.95, buckets, buckets0),
                "lag_p99": quantile(0.99, buckets, buckets0),
            }
            rows.append(row)
            print(f"{row['minute']:>4.0f} {row['cpu']:>6.1f} {row['rss']:>7.1f} {row['server_cpu']:>8.1f} "
                  f"{row['checks']:>10.0f} {row['runs']:>8.0f} {row['scrape_p50']:>13.1f} {row['scrape_p99']:>7.1f} "
                  f"{row['scrape_max']:>7.1f} {row['lag_p50']:>9.3f} {row['lag_p95']:>6.3f} {row['lag_p99']:>6.3f}",
                  flush=True)
            if args.diagnose:
                durations, failures, _, _ = diagnose(text)
                durations.sort()
                new = {k: v - failures0.get(k, 0.0) for k, v in failures.items() if v > failures0.get(k, 0.0)}
                print(f"     run duration p50 {_pick(durations, 0.5):.3f} s p99 {_pick(durations, 0.99):.3f} s "
                      f"max {_pick(durations, 1.0):.3f} s; in flight mean {statistics.mean(flights):.1f} "
                      f"max {max(flights):.0f}; queue mean {statistics.mean(depths):.1f} max {max(depths):.0f}; "
                      f"new failures {new or 'none'}", flush=True)
                stall, store = buckets_of("probe_event_loop_lag_seconds", text), buckets_of("probe_store_write_seconds",
                                                                                           text)
                print(f"     event-loop stall p99 {quantile(0.99, stall, stall0):.3f} s "
                      f"(> 0.1 s: {_over(0.1, stall, stall0):.0f} ticks); store call p99 "
                      f"{quantile(0.99, store, store0):.4f} s (> 0.1 s: {_over(0.1, store, store0):.0f})", flush=True)
                failures0, stall0, store0 = failures, stall, store
            minute_start, cpu0, scpu0 = now, cpu, scpu
            flights, depths = [], []
            buckets0, checks0, runs0, latencies, rss = buckets, checks, runs, [], []
        if now >= end:
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    return rows


def _over(bound: float, now: dict[float, float], before: dict[float, float]) -> float:
    """How many observations of a histogram delta exceeded ``bound`` (a bucket bound)."""
    total = now.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    return total - (now.get(bound, 0.0) - before.get(bound, 0.0))


def _pick(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1))] if values else 0.0


def _summary(rows: list[dict[str, float]], code: int) -> None:
    if not rows:
        return
    steady = rows[1:] or rows  # minute 1 includes the ramp-up of the first slots
    print(f"steady state (minutes {steady[0]['minute']:.0f}-{steady[-1]['minute']:.0f}): "
          f"cpu {statistics.mean(r['cpu'] for r in steady):.1f}% of one core, "
          f"rss {steady[0]['rss']:.1f} -> {steady[-1]['rss']:.1f} MB, "
          f"{statistics.mean(r['checks'] for r in steady):.0f} checks/min, "
          f"scrape p99 max {max(r['scrape_p99'] for r in steady):.1f} ms, "
          f"lag p99 max {max(r['lag_p99'] for r in steady):.3f} s; SIGTERM exit code {code}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _wait_metrics(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the daemon did not serve /metrics")


if __name__ == "__main__":
    raise SystemExit(main())
