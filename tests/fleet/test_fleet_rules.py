"""deploy/rules/fleet-events.rules.yml: a fleet event is one alert, whatever the number of collectors (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "rules"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_fleet_rule_unit_tests_pass() -> None:
    done = subprocess.run(["promtool", "test", "rules", "fleet-events.rules.test.yml"], cwd=RULES,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
