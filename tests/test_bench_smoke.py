"""The TLS handshake benchmark still runs and prints figures that parse (N=20; not a timed test)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "tls_handshakes.py"
EXPORTER = "/usr/bin/prometheus-blackbox-exporter"
ROW = re.compile(r"^([a-z_0-9]+):\s+(.+)$")


def test_tls_handshake_benchmark_prints_parsable_figures() -> None:
    with_blackbox = shutil.which(EXPORTER) is not None
    argv = [sys.executable, str(BENCH), "--n", "20", "--concurrency", "5", "--single", "3", "--deadline", "20",
            "--json"]
    if not with_blackbox:
        argv.append("--no-blackbox")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    lines = done.stdout.splitlines()
    rows = {m.group(1): m.group(2).split() for m in map(ROW.match, lines) if m}
    sides = 2 if with_blackbox else 1
    assert rows["side"] == ["probe", "blackbox"][:sides]
    assert rows["completed"] == ["20/20"] * sides
    for name in ("cpu_ms_per_check", "wall_s", "peak_rss_mb", "handshake_median_ms", "handshake_p99_ms",
                 "uncontended_median_ms"):
        values = [float(v) for v in rows[name]]
        assert len(values) == sides and all(v > 0 for v in values), (name, values)
    if with_blackbox:
        assert float(rows["ratio_cpu_per_check_probe_over_blackbox"][0]) > 0

    figures = json.loads(lines[-1])
    assert figures["probe"]["ok"] == 20
    assert figures["probe"]["handshake_p99_s"] >= figures["probe"]["handshake_median_s"] > 0
    if with_blackbox:
        assert figures["blackbox"]["ok"] == 20
