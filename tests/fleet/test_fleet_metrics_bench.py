"""bench/fleet_metrics.py still runs both designs against a real VictoriaMetrics and every fleet panel
query and recording rule returns series (320 probes; the 10,000-probe figures are in
docs/benchmarks.md, not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm import MISSING, SKIP_REASON

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fleet_metrics.py"


@pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)
def test_fleet_metrics_benchmark_runs_every_panel_query_of_both_designs() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--probes", "320", "--asns", "320", "--countries", "40",
                           "--points", "2", "--repeat", "1", "--json"], capture_output=True, text=True, timeout=300,
                          check=False, cwd=BENCH.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    new, old = figures["new"], figures["old"]
    assert new["probes"] == old["probes"] == 320
    # what vmagent sends: ~45 series per probe, against ~600 of the old design's per-target series
    assert 30 * 320 < new["series"] < 60 * 320 < 500 * 320 < old["series"], (new["series"], old["series"])
    for design in (new, old):
        assert all(rule["series"] > 0 for rule in design["rules"]), design["rules"]
        empty = [row["panel"] for row in design["panels"] if row["series"] == 0]
        assert empty == [], (design["design"], empty)
    assert figures["ratio_old_to_new"]["series"] > 8
