"""The central store down for two minutes leaves no gap in a probe's metrics (vmagent's disk buffer).

The issue's case, with the real binaries: a ``probe daemon`` scraped every ``INTERVAL`` seconds by
its own vmagent (configured by :func:`probe.fleet.vmagent.vmagent_config`, as ``probe enrol``
writes it), VictoriaMetrics stopped for ``OUTAGE`` seconds, then started again. Every scrape made
while it was down must arrive once it is back: the raw samples exported over the outage are never
more than ``MAX_GAP`` apart. Without the buffer the gap is the whole outage (120 s); one scrape
missed on a busy machine is 2 x ``INTERVAL``; ``MAX_GAP`` allows that and a second of lateness,
not two missed scrapes in a row.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from probe.fleet.vmagent import vmagent_config
from tests.fleet.test_vmagent_e2e import AUTH, start_daemon
from tests.service.test_prometheus_e2e import benign, loopback_servers, settings
from tests.vm import MISSING, SKIP_REASON, VictoriaMetrics, free_port, max_gap, start_vmagent, stop, wait_for

pytestmark = pytest.mark.skipif(MISSING, reason=SKIP_REASON)

OUTAGE = 120.0
INTERVAL = 2
MAX_GAP = 2 * INTERVAL + 1.0


def test_two_minutes_without_the_store_leave_no_gap(tmp_path: Path, ca_file: Path, good_tls: Any) -> None:
    vm = VictoriaMetrics(tmp_path / "vm", auth=AUTH).start()
    procs: list[subprocess.Popen[Any]] = []
    try:
        with loopback_servers(good_tls) as ports:
            targets = tmp_path / "probe.yaml"
            targets.write_text(settings(ports, ca_file, tmp_path / "probe.sqlite") + benign(ports))
            probe_port, agent_port = free_port(), free_port()
            procs.append(start_daemon(targets, probe_port))
            agent = vmagent_config(
                tmp_path / "vmagent", probe_id="probe-out", cc="DE", asn=3320,
                remote_write_url=f"{vm.base}/api/v1/write", username=AUTH[0], password=AUTH[1],
                metrics_address=f"127.0.0.1:{probe_port}", interval_seconds=INTERVAL,
                buffer_dir=tmp_path / "buffer", max_disk_usage="500MB", listen=f"127.0.0.1:{agent_port}")
            procs.append(start_vmagent(agent.args, agent_port))
            wait_for(lambda: vm.query('probe_build_info{probe="probe-out"}'), 60, "the probe in VictoriaMetrics")

            vm.stop()
            down_at = time.time()
            time.sleep(OUTAGE)
            up_at = time.time()
            vm.start()
            window = (down_at - 5, up_at + 5)
            wait_for(lambda: vm.query('up{probe="probe-out"}', at=up_at + 5), 60, "samples after the outage")
            wait_for(lambda: max_gap(vm.export('up{probe="probe-out"}', *window), *window) <= MAX_GAP, 90,
                     "the buffered samples of the outage")
            for family in ("up", "probe_build_info", "probe_service_state"):
                samples = vm.export(f'{family}{{probe="probe-out"}}', *window)
                assert samples, family
                assert all(max_gap([s], *window) <= MAX_GAP for s in samples), (
                    family, [max_gap([s], *window) for s in samples])
            stamps = {t for t in vm.export('up{probe="probe-out"}', *window)[0]["timestamps"]
                      if down_at * 1000 < t < up_at * 1000}
            assert len(stamps) >= OUTAGE / INTERVAL * 0.8, len(stamps)  # the outage's scrapes are there
    finally:
        for proc in procs:
            stop(proc)
        vm.stop()
