"""vmagent's disk buffer over a long store outage: the issue's two minutes, with the real binaries.

    PYTHONPATH=. python bench/vmagent_soak.py [--outage 120] [--interval 1]

A real ``probe daemon`` (one TCP target on a closed loopback port, measured every second), its
vmagent configured by :func:`probe.fleet.vmagent.vmagent_config` and a VictoriaMetrics, all on
127.0.0.1. After a warm-up, VictoriaMetrics is stopped for ``--outage`` seconds and started again
on the same data. Printed: the longest time without a raw sample of ``up`` and of
``probe_build_info`` over the outage window (``/api/v1/export``: no lookback, no interpolation),
the samples found against those expected, the peak of vmagent's buffered bytes
(``vmagent_remotewrite_pending_data_bytes``), vmagent's peak resident memory and how long after
the restart the gap was closed.
tests/fleet/test_vmagent_e2e.py does the same with a 20 s outage on every run. Exit 1 on a gap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe.fleet.vmagent import vmagent_config  # noqa: E402
from tests.vm import MISSING, SKIP_REASON, VictoriaMetrics, free_port, max_gap, start_vmagent, stop, wait_for  # noqa: E402


def pending_bytes(agent_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vmagent_remotewrite_pending_data_bytes"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the store is down")
    parser.add_argument("--interval", type=int, default=1, help="vmagent scrape interval (s)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if MISSING:
        print(SKIP_REASON, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vmagent-soak-") as name:
        tmp = Path(name)
        probe_port, agent_port, closed = free_port(), free_port(), free_port()
        (tmp / "targets.yaml").write_text(
            f"settings:\n  store: {tmp / 'probe.sqlite'}\n  interval: 1\n  jitter: 0\n"
            "  timeouts: {connect: 1}\ntargets:\n"
            f"  - {{name: closed, service: soak, category: messaging, addresses: [127.0.0.1], ports: [{closed}], "
            "checks: [tcp]}\n")
        vm = VictoriaMetrics(tmp / "vm").start()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "probe", "daemon", "--targets", str(tmp / "targets.yaml"),
             "--listen", f"127.0.0.1:{probe_port}"], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PROBE_INFORMED_CONSENT": "1"},  # a bench, on loopback
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = vmagent_config(tmp / "vmagent", probe_id="soak-1", cc="DE", asn=3320,
                               remote_write_url=f"{vm.base}/api/v1/write", metrics_address=f"127.0.0.1:{probe_port}",
                               interval_seconds=args.interval, buffer_dir=tmp / "buffer", max_disk_usage="500MB",
                               listen=f"127.0.0.1:{agent_port}")
        agent = start_vmagent(files.args, agent_port)
        try:
            wait_for(lambda: vm.query('probe_build_info{probe="soak-1"}'), 60, "first samples")
            time.sleep(args.warmup)
            vm.stop()
            down_at = time.time()
            peak, rss = 0.0, rss_mb(agent.pid)
            while time.time() - down_at < args.outage:
                peak, rss = max(peak, pending_bytes(agent_port)), max(rss, rss_mb(agent.pid))
                time.sleep(1)
            up_at = time.time()
            vm.start()
            window = (down_at - args.warmup / 2, up_at + 5)
            wait_for(lambda: time.time() > window[1] and all(
                max_gap(vm.export(f'{m}{{probe="soak-1"}}', *window), *window) <= 3 * args.interval
                for m in ("up", "probe_build_info")), 120, "the outage's samples")
            closed_after = time.time() - up_at
            gaps = {m: max_gap(vm.export(f'{m}{{probe="soak-1"}}', *window), *window)
                    for m in ("up", "probe_build_info")}
            found = len(vm.export('up{probe="soak-1"}', *window)[0]["timestamps"])
        except AssertionError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            for proc in (agent, daemon):
                stop(proc)
            vm.stop()
    expected = (window[1] - window[0]) / args.interval
    figures = {"outage_s": round(up_at - down_at, 1), "scrape_interval_s": args.interval,
               "max_gap_up_s": round(gaps["up"], 2), "max_gap_build_info_s": round(gaps["probe_build_info"], 2),
               "samples_up": found, "samples_expected": round(expected), "peak_buffered_bytes": peak,
               "vmagent_peak_rss_mb": round(rss, 1),
               "gap_closed_after_restart_s": round(closed_after, 1)}
    for key, value in figures.items():
        print(f"{key + ':':<28} {value}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
