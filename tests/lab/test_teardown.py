"""The lab leaves nothing behind: namespaces, links, processes, state; `down` works after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def _lab_processes(prefix: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"/run/probe-lab/{prefix}" in line or f"{prefix}-" in line]


def test_context_manager_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from probe.lab import Lab, namespaces

    with Lab("tleak1") as lab:
        assert len(namespaces("tleak1")) == 3
        state = lab.state
        lab.apply("loss", percent=1)
    assert namespaces("tleak1") == []
    assert not state.exists()
    assert _lab_processes("tleak1") == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "tleak1" not in links


def test_down_after_a_crash() -> None:
    """A process that built a lab is killed: `probe lab down` still removes everything."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from probe.lab import namespaces

    script = ("from probe.lab import Lab\nlab = Lab('tleak2'); lab.up(); print('up', flush=True)\n"
              "import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(namespaces("tleak2")) == 3
        done = subprocess.run([sys.executable, "-m", "probe", "lab", "down", "--prefix", "tleak2"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        proc.kill()
        from probe.lab import down

        down("tleak2")
    assert namespaces("tleak2") == []
    assert _lab_processes("tleak2") == []
