"""bench/fleet_ingest.py still runs and prints figures that parse (a tiny fleet; not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probe.fleet.localpg import pg_bin

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fleet_ingest.py"


@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL binaries missing (apt-get install postgresql)")
def test_fleet_ingest_benchmark_prints_parsable_figures() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--probes", "20", "--per-probe", "10", "--batch", "5",
                           "--collectors", "2", "--concurrency", "8", "--deadline", "60", "--fast", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["sent"] == figures["stored_distinct"] == figures["stored"] == 200 and figures["lost"] == 0
    for key in ("measurements_per_s", "copy_measurements_per_s", "ratio_collector_over_copy", "batch_p50_ms",
                "pg_bytes_per_measurement"):
        assert figures[key] > 0, key
    assert figures["batch_p99_ms"] >= figures["batch_p50_ms"]
