"""bench/fleet_metrics.py still runs against a real VictoriaMetrics and every fleet panel query
returns series (320 probes; the 10,000-probe figures are in docs/benchmarks.md, not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm import MISSING, SKIP_REASON

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fleet_metrics.py"


@pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)
def test_fleet_metrics_benchmark_runs_every_panel_query() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--probes", "320", "--asns", "320", "--countries", "40",
                           "--points", "2", "--repeat", "1", "--json"], capture_output=True, text=True, timeout=180,
                          check=False, cwd=BENCH.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["probes"] == 320 and figures["series"] > 320 * 500
    assert all(rule["series"] > 0 for rule in figures["rules"]), figures["rules"]
    empty = [row["panel"] for row in figures["panels"] if row["series"] == 0]
    assert empty == [], empty
