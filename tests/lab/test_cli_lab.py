"""`probe lab` from the command line: refuses clearly without root; up/status/down as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probe.cli import main


def test_non_root_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for argv in (["lab", "up"], ["lab", "down"], ["lab", "status"], ["lab", "run", "seeds/x.yaml"]):
        assert main(argv) == 2
        assert "needs root" in capsys.readouterr().err


@pytest.mark.lab
def test_up_status_down() -> None:
    prefix = f"tcli{os.getpid() % 100}"

    def probe_lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "probe", "lab", *args, "--prefix", prefix],
                              capture_output=True, text=True, timeout=120, check=False)

    try:
        up = probe_lab("up")
        assert up.returncode == 0, up.stderr
        status = json.loads(probe_lab("status").stdout)
        assert status["running"] is True
        assert sorted(status["namespaces"]) == sorted(f"{prefix}-{n}" for n in ("client", "r1", "srv"))
        assert len(status["processes"]) >= 3  # servers, ISP resolver, block pages
        down = probe_lab("down")
        assert down.returncode == 0, down.stderr
        after = json.loads(probe_lab("status").stdout)
        assert after == {"prefix": prefix, "namespaces": [], "processes": [], "running": False}
    finally:
        from probe.lab import down as lab_down

        lab_down(prefix)
