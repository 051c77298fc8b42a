"""The network between probe and collector cut (a namespace link down), then restored: every
measurement arrives once. The probe and the collector live in namespaces of their own, joined by a
veth pair on 198.18.200.0/30; the collector reaches PostgreSQL by its Unix socket.

The cut lasts 15 s here (kept short for the suite; the uploader's backoff is the same for minutes);
``FLEET_CUT_S=120`` runs a two-minute cut (not in CI).
Run under the lab lock: ``flock /tmp/probe-lab.lock pytest tests/fleet/test_network_cut.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from probe.fleet.localpg import Cluster
from tests.fleet.sources import measurements

pytestmark = [pytest.mark.lab, pytest.mark.slow]
COL, PRB = "fleet-col", "fleet-prb"
CUT_S = float(os.environ.get("FLEET_CUT_S", "15"))  # the length of the cut, s
COL_IP, PRB_IP = "198.18.200.1", "198.18.200.2"
ROOT = Path(__file__).resolve().parents[2]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def link() -> Iterator[None]:
    for ns in (COL, PRB):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    try:
        ip("netns", "add", COL)
        ip("netns", "add", PRB)
        ip("link", "add", "fleet-a", "netns", COL, "type", "veth", "peer", "name", "fleet-b", "netns", PRB)
        for ns, dev, addr in ((COL, "fleet-a", COL_IP), (PRB, "fleet-b", PRB_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (COL, PRB):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def in_ns(ns: str, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "probe", *argv], env=env,
                            **kwargs)  # type: ignore[call-overload]


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.05)


def test_link_down_then_up_every_measurement_arrives_once(link: None, cluster: Cluster, db: str, token: str,
                                                         tmp_path: Path) -> None:
    socket_dsn = f"postgresql://postgres@/{db.rsplit('/', 1)[1]}?host={cluster.dir}&port={cluster.port}"
    log = (tmp_path / "collector.log").open("wb")
    collector = in_ns(COL, "collector", "serve", "--db", socket_dsn, "--listen", f"{COL_IP}:8470",
                      stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{COL_IP}:8470"
    config, source = tmp_path / "fleet.json", tmp_path / "m.jsonl"
    uploader: subprocess.Popen[bytes] | None = None
    try:
        def enrolled() -> bool:
            done = in_ns(PRB, "enrol", url, token, "--config", str(config), "--probe-id", "cut-probe",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return done.wait(30) == 0
        wait_for(enrolled, 60, "enrolment through the namespace link")
        items = measurements("cut-probe", 3000)
        source.write_text("".join(json.dumps(m) + "\n" for m in items))
        uploaded = tmp_path / "m.jsonl.uploaded"
        out = (tmp_path / "upload.out").open("wb")
        uploader = in_ns(PRB, "upload", "--from", str(source), "--config", str(config), "--batch", "20",
                         "--timeout", "3", "--deadline", str(180 + CUT_S), stdout=out, stderr=subprocess.STDOUT)

        def acked() -> int:
            return len(uploaded.read_text().split()) if uploaded.exists() else 0
        wait_for(lambda: acked() >= 200, 60, "200 acknowledged")
        ip("-n", COL, "link", "set", "fleet-a", "down")
        at_cut = acked()
        time.sleep(CUT_S)  # the outage itself (deliberate, not a wait for readiness)
        during = acked()
        ip("-n", COL, "link", "set", "fleet-a", "up")
        assert uploader.wait(180 + CUT_S) == 0, (tmp_path / "upload.out").read_text()
    finally:
        for proc in (collector, uploader):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    with psycopg.connect(db) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT measurement_uid) FROM measurements").fetchone()
    print(f"\nlink down {CUT_S:.0f} s after {at_cut} acknowledged ({during - at_cut} more during the cut): "
          f"sent 3000, stored {rows}, twice {rows - distinct}, lost {3000 - distinct}")
    assert at_cut < 3000 and during - at_cut <= 20  # at most the batch in flight at the cut
    assert (rows, distinct) == (3000, 3000)
