"""The lab leaves nothing behind: namespaces, links, processes, state; `down` works after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

# unique per run: parallel runs of this module (other checkouts, CI jobs) must not tear down each other
LEAK1, LEAK2 = f"tlk1p{os.getpid() % 1000}", f"tlk2p{os.getpid() % 1000}"


def _lab_processes(prefix: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"/run/probe-lab/{prefix}" in line or f"{prefix}-" in line]


def test_context_manager_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from probe.lab import Lab, namespaces

    with Lab(LEAK1) as lab:
        assert len(namespaces(LEAK1)) == 3
        state = lab.state
        lab.apply("loss", percent=1)
    assert namespaces(LEAK1) == []
    assert not state.exists()
    assert _lab_processes(LEAK1) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert LEAK1 not in links


def test_down_after_a_crash() -> None:
    """A process that built a lab is killed: `probe lab down` still removes everything."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from probe.lab import namespaces

    script = (f"from probe.lab import Lab\nlab = Lab({LEAK2!r}); lab.up(); print('up', flush=True)\n"
              "import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(namespaces(LEAK2)) == 3
        done = subprocess.run([sys.executable, "-m", "probe", "lab", "down", "--prefix", LEAK2],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        proc.kill()
        from probe.lab import down

        down(LEAK2)
    assert namespaces(LEAK2) == []
    assert _lab_processes(LEAK2) == []


def test_down_by_prefix_spares_reused_pids_and_removes_stray_links() -> None:
    """After a crash the pid file may name pids that now belong to someone else: those live on.
    A veth pair left in the root namespace by a crash in the middle of linking is removed."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from probe.lab import Lab, namespaces
    from probe.lab.lab import STATE_ROOT

    prefix = f"tleak3{os.getpid() % 100}"
    bystander = subprocess.Popen(["sleep", "60"])
    state = STATE_ROOT / prefix
    try:
        state.mkdir(parents=True, exist_ok=True)
        (state / "pids").write_text(f"{bystander.pid}\n")
        subprocess.run(["ip", "link", "add", f"{prefix}x1a", "type", "veth", "peer", "name", f"{prefix}x1b"],
                       check=True, timeout=10)
        Lab.down(prefix)  # by prefix, without a Lab object: what `probe lab down` does
        assert bystander.poll() is None, "a pid that is not the lab's was killed"
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert prefix not in links
        assert not state.exists()
        assert namespaces(prefix) == []
    finally:
        bystander.kill()
        bystander.wait(10)
        subprocess.run(["ip", "link", "del", f"{prefix}x1a"], capture_output=True, timeout=10, check=False)
