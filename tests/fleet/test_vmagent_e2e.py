"""The fleet's metrics path with the real binaries: two probes, two vmagents, one VictoriaMetrics.

Each ``probe daemon`` (the real pipeline against loopback servers, plus the synthetic throughput,
circumvention and throttling results of tests/service/test_prometheus_e2e.py) is scraped by its own
vmagent, configured by :func:`probe.fleet.vmagent.vmagent_config` exactly as ``probe enrol`` writes
it, remote-writing with basic auth to one VictoriaMetrics on loopback. Checked:

* the series arrive with each probe's ``probe``, ``cc``, ``asn`` and ``instance`` labels, and only
  what the fleet needs arrives: per probe, exactly the series of the daemon's own ``/metrics`` that
  the relabel rules ``probe enrol`` writes keep (each service's state, health, build, ``up``); no
  per-target family, histogram or ``scrape_*`` series;
* the alert expressions of deploy/rules/probe.rules.yml that read probe-level series or events
  (down, config reload failed, store errors, throttling) return the expected series centrally, the
  ones over per-target verdicts none (those are for a Prometheus scraping the probe,
  tests/service/test_prometheus_e2e.py); both rule files pass ``vmalert -dryRun``;
* vmalert records deploy/rules/fleet.rules.yml, and every fleet dashboard panel query returns data:
  the overview's cells, the probes seeing blocking and the result ages are the expected series;
* VictoriaMetrics stopped for ``OUTAGE`` seconds (20 here; tests/fleet/test_vmagent_outage.py does the two
  minutes of the issue) leaves no gap: the raw samples exported over the outage window are never
  more than ``MAX_GAP`` apart (vmagent's disk buffer sends them once the store is back), and a range
  query with a step of the scrape interval has a point at every step.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.dashboards import STATES
from probe.fleet.vmagent import CENTRAL_FAMILIES, vmagent_config
from tests.service.test_metrics_docs import documented_families
from tests.service.test_prometheus_e2e import (
    benign,
    blocking,
    dashboard_queries,
    fast_rules,
    loopback_servers,
    settings,
)
from tests.synthetic_metrics import relabelled
from tests.vm import (
    MISSING,
    SKIP_REASON,
    VMALERT,
    VictoriaMetrics,
    free_port,
    max_gap,
    start_vmagent,
    stop,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OUTAGE = 20.0
INTERVAL = 1  # the vmagent scrape interval in this test (seconds)
MAX_GAP = 3 * INTERVAL
AUTH = ("fleet", "s3cret-write-token")
PROBES = {"probe-a": ("DE", 3320), "probe-b": ("IR", 58224)}

pytestmark = pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)


def alert_exprs() -> dict[str, str]:
    data = yaml.safe_load((DEPLOY / "rules" / "probe.rules.yml").read_text())
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}


def fleet_queries() -> list[tuple[str, str]]:
    return [(where, expr) for where, expr in dashboard_queries() if where.startswith("probe-fleet.json")]


def sent(port: int, rules: list[dict[str, Any]]) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """What the relabel ``rules`` keep of one scrape of the daemon's own /metrics (and vmagent's ``up``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())) for s in relabelled(text, rules)}


def arrived(vm: VictoriaMetrics, probe_id: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """The series of one probe in VictoriaMetrics, without the labels vmagent adds."""
    added = {"__name__", "probe", "cc", "asn", "instance", "job"}
    return {(r["metric"]["__name__"], frozenset((k, v) for k, v in r["metric"].items() if k not in added))
            for r in vm.query(f'{{probe="{probe_id}"}}')}


def by(result: list[dict[str, Any]], *keys: str) -> set[tuple[str, ...]]:
    return {tuple(r["metric"].get(k, "") for k in keys) for r in result}


def start_daemon(targets: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--listen", f"127.0.0.1:{port}",
         "--measure", "tests.service.test_prometheus_e2e:hybrid_measure", "--grace", "2"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("name", ["probe.rules.yml", "fleet.rules.yml"])
def test_vmalert_accepts_the_rules(name: str) -> None:
    done = subprocess.run([VMALERT, f"-rule={DEPLOY / 'rules' / name}", "-dryRun", "-loggerLevel=ERROR"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def start_vmalert(rules: Path, vm: VictoriaMetrics, *extra: str, port: int | None = None) -> subprocess.Popen[bytes]:
    """vmalert evaluating ``rules`` against ``vm`` and writing the recorded series back to it."""
    port = port or free_port()
    auth = [f"-{side}.basicAuth.{k}={v}" for side in ("datasource", "remoteWrite")
            for k, v in (("username", AUTH[0]), ("password", AUTH[1]))]
    proc = subprocess.Popen([VMALERT, f"-rule={rules}", f"-datasource.url={vm.base}", f"-remoteWrite.url={vm.base}",
                             f"-httpListenAddr=127.0.0.1:{port}", "-remoteWrite.flushInterval=1s",
                             "-loggerLevel=ERROR", *auth, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200, 30,
               "vmalert ready")
    return proc


def test_two_probes_through_vmagent_into_victoriametrics(tmp_path: Path, ca_file: Path, good_tls: Any) -> None:
    exprs = alert_exprs()
    vm = VictoriaMetrics(tmp_path / "vm", auth=AUTH).start()
    procs: list[subprocess.Popen[Any]] = []
    daemons: dict[str, subprocess.Popen[str]] = {}
    ports_of: dict[str, int] = {}
    relabel: list[dict[str, Any]] = []
    try:
        with loopback_servers(good_tls) as ports:
            files: dict[str, Path] = {}
            for probe_id, (cc, asn) in PROBES.items():
                files[probe_id] = tmp_path / f"{probe_id}.yaml"
                files[probe_id].write_text(settings(ports, ca_file, tmp_path / f"{probe_id}.sqlite") + benign(ports))
                probe_port, agent_port = free_port(), free_port()
                daemons[probe_id] = start_daemon(files[probe_id], probe_port)
                ports_of[probe_id] = probe_port
                agent = vmagent_config(
                    tmp_path / f"vmagent-{probe_id}", probe_id=probe_id, cc=cc, asn=asn,
                    remote_write_url=f"{vm.base}/api/v1/write", username=AUTH[0], password=AUTH[1],
                    metrics_address=f"127.0.0.1:{probe_port}", interval_seconds=INTERVAL,
                    buffer_dir=tmp_path / f"buffer-{probe_id}", max_disk_usage="500MB",
                    listen=f"127.0.0.1:{agent_port}")
                relabel = yaml.safe_load(agent.relabel_config.read_text())
                procs.append(start_vmagent(agent.args, agent_port))
            procs.extend(daemons.values())
            procs.append(start_vmalert(fast_rules(tmp_path, "fleet.rules.yml"), vm))

            # -- both probes' series arrive, each with its own identity --------------------------------
            expected = {(p, cc, f"AS{asn}", p, "probe") for p, (cc, asn) in PROBES.items()}
            wait_for(lambda: by(vm.query("probe_build_info"), "probe", "cc", "asn", "instance", "job")
                       == expected, 60, "both probes in VictoriaMetrics")
            wait_for(lambda: len(vm.query('probe_service_state{service="web"}')) == 2, 60, "web's state on both")
            assert by(vm.query('probe_service_state{service="web", state="ok"} == 1'), "probe", "cc", "asn") == \
                {(p, cc, f"AS{asn}") for p, (cc, asn) in PROBES.items()}
            assert by(vm.query("up"), "probe", "job") == {(p, "probe") for p in PROBES}
            # only what the relabel rules keep of each daemon's /metrics arrives, all of it
            for probe_id, port in ports_of.items():
                wait_for(lambda p=probe_id, port=port: arrived(vm, p) == sent(port, relabel), 60,
                         f"exactly the kept series of {probe_id}")
                kept, everything = len(arrived(vm, probe_id)), len(sent(port, []))  # [] keeps the whole /metrics
                assert 0 < kept < everything / 5, (kept, everything)
            names = {r["metric"]["__name__"] for r in vm.query('count by (__name__) ({__name__=~".+"})')}
            assert names <= set(CENTRAL_FAMILIES) | {"asn_service:probe_service_state:count"}, names
            assert vm.query('{__name__=~"probe_(reachable|blocking|accessible|check_.+|scheduler_lag_seconds_.+)'
                            '|process_.+|scrape_.+"}') == []
            for name, expr in exprs.items():
                assert vm.query(expr) == [], f"{name} fires while both probes are benign"
            # every probe_* family a real daemon sent is one docs/metrics.md lists
            names = {r["metric"]["__name__"] for r in vm.query('count by (__name__) ({__name__=~"probe_.+"})')}
            bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
            assert bases - documented_families() == set()

            # -- probe-a: throttling starts, a target is blocked, another hangs -----------------------
            files["probe-a"].write_text(settings(ports, ca_file, tmp_path / "probe-a.sqlite") + blocking(ports))
            daemons["probe-a"].send_signal(signal.SIGHUP)
            files["probe-b"].write_text("targets: [not: valid\n")  # probe-b: a broken configuration
            daemons["probe-b"].send_signal(signal.SIGHUP)
            wait_for(lambda: vm.query(exprs["ProbeConfigReloadFailed"]), 60, "the reload alert expression")
            assert by(vm.query(exprs["ProbeConfigReloadFailed"]), "probe", "cc", "asn") == \
                {("probe-b", "IR", "AS58224")}
            wait_for(lambda: vm.query('asn_service:probe_service_state:count{state="blocked"} > 0') and vm.query(
                'asn_service:probe_service_state:count{state="inconclusive"} > 0'), 60,
                "vmalert's recorded series of the blocking phase")
            wait_for(lambda: vm.query('probe_event_active{type="throttling"}'), 60, "a throttling event")
            expected_states = {
                ("probe-a", "DE", "AS3320", "chat", "blocked"), ("probe-a", "DE", "AS3320", "web", "throttled"),
                ("probe-a", "DE", "AS3320", "video", "inconclusive"), ("probe-a", "DE", "AS3320", "control", "ok"),
                ("probe-b", "IR", "AS58224", "web", "ok"), ("probe-b", "IR", "AS58224", "control", "ok")}
            wait_for(lambda: by(vm.query("probe_service_state == 1"), "probe", "cc", "asn", "service", "state")
                     == expected_states, 60, "each probe's view of each service")
            # throttling alerts through its event (events are sent); the per-target verdicts and
            # timestamps are not sent, so the blocking and stale alerts stay for a Prometheus
            # scraping the probe (tests/service/test_prometheus_e2e.py)
            assert by(vm.query(exprs["ProbeThrottlingDetected"]), "probe", "cc", "asn", "target") == \
                {("probe-a", "DE", "AS3320", "web")}
            for name in ("ProbeBlockingStarted", "ProbeStale", "ProbeDown", "ProbeStoreWriteErrors",
                         "ProbeStoreRecordsDropped"):
                assert vm.query(exprs[name]) == [], name
            time.sleep(2)
            now = time.time()
            missing = [(where, expr) for where, expr in fleet_queries()
                       if not vm.query_range(expr, now - 60, now, INTERVAL)]
            assert missing == [], f"fleet panels without data in VictoriaMetrics: {missing}"
            panel = dict(fleet_queries())
            assert by(vm.query(panel["probe-fleet.json: Probes seeing blocking or throttling"]),
                      "probe", "cc", "asn", "service", "state") == {
                ("probe-a", "DE", "AS3320", "chat", "blocked"), ("probe-a", "DE", "AS3320", "web", "throttled")}
            # the drill-down's last level: one probe's every service (the link sets $probe)
            services = panel["probe-fleet.json: Services of the selected probes"]
            assert by(vm.query(services), "probe", "cc", "asn", "service", "state") == expected_states
            one = services.replace('probe=~".*"', 'probe=~"probe-b"')
            assert by(vm.query(one), "probe", "service", "state") == {
                ("probe-b", "web", "ok"), ("probe-b", "control", "ok")}
            ages = vm.query(panel["probe-fleet.json: Probe health: newest result age"])
            assert by(ages, "probe", "cc", "asn") == {(p, cc, f"AS{asn}") for p, (cc, asn) in PROBES.items()}
            assert all(0 <= float(r["value"][1]) < 60 for r in ages), ages
            # the fleet overview's cells: (service, cc, asn) -> probes in each state
            states = {}
            for state, expr in STATES.items():
                expr = expr.replace("$cc", ".*").replace("$asn", ".*").replace("$service", ".*")
                for row in vm.query(expr):
                    if row["value"][1] != "0":
                        states[(state, *(row["metric"][k] for k in ("service", "cc", "asn")))] = row["value"][1]
            assert states == {
                ("blocked", "chat", "DE", "AS3320"): "1", ("throttled", "web", "DE", "AS3320"): "1",
                ("outage", "video", "DE", "AS3320"): "1",
                ("ok", "web", "IR", "AS58224"): "1", ("ok", "control", "DE", "AS3320"): "1",
                ("ok", "control", "IR", "AS58224"): "1"}, states

            # -- the store is down for OUTAGE seconds: vmagent buffers on disk ------------------------
            vm.stop()
            down_at = time.time()
            time.sleep(OUTAGE)
            up_at = time.time()
            vm.start()
            wait_for(lambda: vm.query("up", at=up_at + 5), 60, "samples after the outage")
            window = (down_at - 5, up_at + 5)
            wait_for(lambda: all(max_gap(vm.export(f'up{{probe="{p}"}}', *window), *window) <= MAX_GAP
                                   for p in PROBES), 60, "the buffered samples of the outage")
            for probe_id in PROBES:
                samples = vm.export(f'probe_build_info{{probe="{probe_id}"}}', *window)
                assert max_gap(samples, *window) <= MAX_GAP, (probe_id, max_gap(samples, *window))
                points = vm.query_range(f'max(up{{probe="{probe_id}"}})', *window, INTERVAL)
                steps = int((window[1] - window[0]) // INTERVAL)
                assert len(points[0]["values"]) >= steps, (probe_id, len(points[0]["values"]), steps)

            # -- a probe daemon stops: its vmagent reports it down --------------------------------------
            daemons["probe-b"].send_signal(signal.SIGTERM)
            assert daemons["probe-b"].wait(timeout=20) == 0
            wait_for(lambda: vm.query(exprs["ProbeDown"]), 30, "probe-b down")
            assert by(vm.query(exprs["ProbeDown"]), "probe", "cc", "asn") == {("probe-b", "IR", "AS58224")}
    finally:
        for proc in procs:
            stop(proc)
        vm.stop()
