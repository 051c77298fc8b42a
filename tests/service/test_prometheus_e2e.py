"""End to end: a real Prometheus scrapes a real ``probe daemon`` measuring loopback servers.

The daemon runs the real pipeline (DNS, TCP, TLS, HTTP against servers on
127.0.0.1 started here). :func:`hybrid_measure` adds what loopback cannot produce
cheaply: throughput flows and a circumvention result (synthetic records), a
throttling verdict, and a target whose runs hang (to make it stale). The TCP/IP
blocking is real: a target on a closed port.

Phases: benign (every alert expression returns nothing), then a SIGHUP to the
blocking configuration (every dashboard panel query returns data; the blocking,
throttling, stale and reload-failed expressions return the expected series), then
SIGTERM (exit 0; the down expression fires).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.dashboards import COLLECTOR_SERIES
from probe.analysis.verdict import Controls
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import CheckResult
from probe.pipeline import TargetOutcome, measure_target
from tests.loopback import DNSServer, Server, closed_port, http_app
from tests.service.test_daemon import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                                reason="needs /usr/bin/prometheus (Debian package prometheus)")

# -- The measure function the daemon subprocess runs -------------------------------------------


@dataclass(frozen=True)
class SyntheticThroughput:
    rate_bytes_per_second: float


@dataclass(frozen=True)
class SyntheticCircumvention:
    protocol: str
    status: str


RUNS: dict[str, int] = {}


async def hybrid_measure(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """The real pipeline, plus options: ``throughput``, ``circumvention``, ``throttled``, ``outage``
    (an inconclusive verdict, as when the probe's controls fail too), ``hang_after``."""
    opts = target.options
    RUNS[target.name] = RUNS.get(target.name, 0) + 1
    if "hang_after" in opts and RUNS[target.name] > int(opts["hang_after"]):
        await asyncio.sleep(600)  # the daemon's run budget cancels this
    outcome = await measure_target(target, ctx, controls)
    extra: list[CheckResult[Any]] = []
    start = ctx.clock()
    if opts.get("throughput"):
        target_rate = 2e5 if opts.get("throttled") else 2e6
        for role, rate in (("target", target_rate), ("control", 2.1e6)):
            extra.append(CheckResult(
                check="throughput", target=target.name, input="synthetic", ok=True, failure=None,
                failed_operation=None, start_time=start, runtime=1.0, details=SyntheticThroughput(rate),
                role=role, timings={"transfer": 1.0}))  # type: ignore[arg-type]
    if "circumvention" in opts:
        status = str(opts["circumvention"])
        extra.append(CheckResult(
            check="circumvention", target=target.name, input="openvpn://127.0.0.1:1194/udp",
            ok=status == "answered", failure=None if status == "answered" else "generic_timeout_error",
            failed_operation=None, start_time=start, runtime=0.2,
            details=SyntheticCircumvention("openvpn", status)))
    verdict = outcome.verdict
    if opts.get("throttled"):
        verdict = replace(verdict, accessible=True, blocking="throttling", rule="throttling")
    if opts.get("outage"):
        verdict = replace(verdict, accessible=None, blocking=None)
    return TargetOutcome(target, outcome.results + tuple(extra), verdict)


# -- Loopback servers in a background thread -------------------------------------------------


@contextlib.contextmanager
def loopback_servers(tls_context: Any) -> Iterator[dict[str, int]]:
    ports: dict[str, int] = {}
    ready, done = threading.Event(), None
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal done
        done = asyncio.Event()
        async with DNSServer() as dns_server, Server(http_app, tls_context) as server:
            ports.update(dns=dns_server.port, https=server.port)
            ready.set()
            await done.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "loopback servers did not start"
        yield ports
    finally:
        if done is not None:
            loop.call_soon_threadsafe(done.set)
        thread.join(10)
        loop.close()


# -- Configuration of each phase -------------------------------------------------------------


def settings(ports: dict[str, int], ca_file: Path, store: Path) -> str:
    return (f"settings:\n  resolvers: [udp://127.0.0.1:{ports['dns']}]\n  ca_bundle: {ca_file}\n"
            f"  store: {store}\n  interval: 1\n  jitter: 0\n  concurrency: 8\n"
            "  timeouts: {dns: 1, connect: 1, tls: 1, http: 2, throughput: 2}\n")


def benign(ports: dict[str, int]) -> str:
    p = ports["https"]
    return f"""targets:
  - {{name: ctl, service: control, category: control, addresses: [127.0.0.1], ports: [{p}], checks: [tcp]}}
  - {{name: web-dns, service: web, category: messaging, host: ok.test, checks: [dns]}}
  - name: web
    service: web
    category: messaging
    addresses: [127.0.0.1]
    sni: good.test
    ports: [{p}]
    checks: [tcp, tls, http]
    urls: ["https://good.test:{p}/"]
    options: {{throughput: true, circumvention: answered}}
"""


def blocking(ports: dict[str, int]) -> str:
    p = ports["https"]
    return benign(ports).replace("circumvention: answered", "circumvention: blocked, throttled: true") + f"""
  - {{name: blocked, service: chat, category: messaging, addresses: [127.0.0.1], ports: [{closed_port()}],
     checks: [tcp]}}
  - {{name: stuck, service: chat, category: messaging, addresses: [127.0.0.1], ports: [{p}], checks: [tcp],
     options: {{hang_after: 1}}}}
  - {{name: down, service: video, category: messaging, addresses: [127.0.0.1], ports: [{p}], checks: [tcp],
     options: {{outage: true}}}}
"""


# -- Prometheus ---------------------------------------------------------------------------------


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def query_range(self, expr: str, seconds: float = 60) -> list[dict[str, Any]]:
        now = time.time()
        return list(self.get("/api/v1/query_range", query=expr, start=str(now - seconds), end=str(now),
                             step="1")["result"])


def on_demand_job(probe_port: int, targets: list[str]) -> dict[str, Any]:
    """deploy/prometheus.yml's documented ``probe-on-demand`` job, pointed at this daemon."""
    jobs = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    job: dict[str, Any] = next(j for j in jobs if j["job_name"] == "probe-on-demand")
    job.update(scrape_interval="2s", scrape_timeout="2s", static_configs=[{"targets": targets}])
    address = next(r for r in job["relabel_configs"] if r.get("target_label") == "__address__")
    address["replacement"] = f"127.0.0.1:{probe_port}"
    return job


def fast_rules(tmp: Path, name: str) -> Path:
    """A copy of deploy/rules/NAME evaluated every second (the fleet recording rules say 30 s)."""
    data = yaml.safe_load((DEPLOY / "rules" / name).read_text())
    for group in data["groups"]:
        group["interval"] = "1s"
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def start_prometheus(tmp: Path, probe_port: int, on_demand: list[str]) -> tuple[subprocess.Popen[bytes], Prom]:
    return run_prometheus(tmp, {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(DEPLOY / "rules" / "probe.rules.yml"), str(fast_rules(tmp, "fleet.rules.yml"))],
        "scrape_configs": [{"job_name": "probe", "static_configs": [
            {"targets": [f"127.0.0.1:{probe_port}"], "labels": {"instance": "probe-test"}}]},
            on_demand_job(probe_port, on_demand)],
    })


def run_prometheus(tmp: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Prom]:
    """A real Prometheus on loopback with this configuration, its data under ``tmp``; once ready."""
    port = free_port()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    prom = Prom(port)
    wait_for(lambda: urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2).status == 200, 30, "prometheus")
    return proc, prom


def dashboard_queries(*, collector: bool = False) -> list[tuple[str, str]]:
    """(where, expr) of every panel query, the variables set to "All" (a single service, web, where
    the dashboard needs one: ``service="$service"``). The queries of the panels that read a fleet
    collector's series (``COLLECTOR_SERIES``) with ``collector=True``, the others without."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        data = json.loads(path.read_text())
        for panel in data["panels"]:
            exprs = [t["expr"] for t in panel.get("targets", [])]
            if any(COLLECTOR_SERIES.search(e) for e in exprs) != collector:
                continue
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "15s").replace('=~"$service"', '=~".*"')
                for var in ("$instance", "$cc", "$asn", "$probe"):
                    expr = expr.replace(var, ".*")
                out.append((f"{path.name}: {panel['title']}", expr.replace("$service", "web")))
    return out


def alert_exprs() -> dict[str, str]:
    data = yaml.safe_load((DEPLOY / "rules" / "probe.rules.yml").read_text())
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}


def labels(result: list[dict[str, Any]], key: str) -> set[str]:
    return {r["metric"].get(key, "") for r in result}


def test_prometheus_scrapes_the_daemon_dashboards_and_alerts(tmp_path: Path, ca_file: Path, good_tls: Any) -> None:
    exprs = alert_exprs()
    with loopback_servers(good_tls) as ports:
        targets, store = tmp_path / "targets.yaml", tmp_path / "probe.sqlite"
        targets.write_text(settings(ports, ca_file, store) + benign(ports))
        probe_port = free_port()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--listen",
             f"127.0.0.1:{probe_port}", "--measure", "tests.service.test_prometheus_e2e:hybrid_measure",
             "--grace", "2"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        prom_proc = None
        try:
            # both uses at once: the continuous job and the blackbox-style /probe job
            prom_proc, prom = start_prometheus(tmp_path, probe_port, on_demand=["web", "blocked"])
            # -- benign phase ------------------------------------------------------------
            wait_for(lambda: len(prom.query('probe_reachable{service="web"}')) >= 6, 40, "web checks scraped")
            web = {r["metric"]["check"]: r["value"][1] for r in prom.query('probe_reachable{service="web"}')}
            assert web == {c: "1" for c in ("dns", "tcp", "tls", "http", "throughput", "circumvention")}, web
            assert prom.query('probe_accessible{target="web"}')[0]["value"][1] == "1"
            time.sleep(3)  # a few more scrapes and evaluations
            for name, expr in exprs.items():
                assert prom.query(expr) == [], f"{name} fires in the benign phase"
            # -- blocking phase ----------------------------------------------------------
            targets.write_text(settings(ports, ca_file, store) + blocking(ports))
            daemon.send_signal(signal.SIGHUP)
            wait_for(lambda: prom.query(exprs["ProbeBlockingStarted"]), 30, "blocking in prometheus")
            wait_for(lambda: prom.query(exprs["ProbeStale"]), 30, "stale target")
            wait_for(lambda: prom.query(exprs["ProbeThrottlingDetected"]), 30, "throttling")
            wait_for(lambda: prom.query("probe_event_active"), 30, "a detected event (the fleet time line)")
            wait_for(lambda: prom.query('asn_service:probe_service_state:count{state="blocked"} > 0') and prom.query(
                'asn_service:probe_service_state:count{state="inconclusive"} > 0'), 30, "the fleet recording rules")
            time.sleep(2)
            missing = [title for title, expr in dashboard_queries() if not prom.query_range(expr)]
            assert missing == [], f"panels without data: {missing}"
            wait_for(lambda: prom.query('probe_success{job="probe-on-demand",instance="blocked"} == 0'), 30,
                     "the on-demand job measuring the blocked target")
            time.sleep(2)
            fired = prom.query(exprs["ProbeBlockingStarted"])  # once, from the daemon: not again per job
            assert [(r["metric"]["instance"], r["metric"]["target"], r["metric"]["type"]) for r in fired] == \
                [("probe-test", "blocked", "tcp_ip")]
            assert prom.query('probe_blocking{job="probe-on-demand",target="blocked",type="tcp_ip"} == 1')
            throttled = prom.query(exprs["ProbeThrottlingDetected"])
            assert [(r["metric"]["instance"], r["metric"]["target"]) for r in throttled] == [("probe-test", "web")]
            assert labels(prom.query(exprs["ProbeStale"]), "target") == {"stuck"}
            # the dashboards' probe selector (label_values(probe_build_info, instance)) lists probes only
            assert labels(prom.query("probe_build_info"), "instance") == {"probe-test"}
            assert {r["metric"]["instance"]: r["value"][1] for r in prom.query('probe_success')} == \
                {"web": "1", "blocked": "0"}
            assert prom.query(exprs["ProbeConfigReloadFailed"]) == []
            # the rules are loaded and evaluating: pending until their `for` elapses
            pending = prom.query('ALERTS{alertstate="pending"}')
            assert {"ProbeBlockingStarted", "ProbeThrottlingDetected"} <= labels(pending, "alertname")
            # -- an invalid file on SIGHUP ------------------------------------------------
            targets.write_text("targets:\n  - {name: x}\n")
            daemon.send_signal(signal.SIGHUP)
            wait_for(lambda: prom.query(exprs["ProbeConfigReloadFailed"]), 20, "reload failure")
            assert prom.query('probe_targets')[0]["value"][1] == "6"  # still the blocking configuration
            # -- shutdown: exit 0, then the probe is down ---------------------------------
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0
            wait_for(lambda: prom.query(exprs["ProbeDown"]), 20, "probe down")
            assert prom.query(exprs["ProbeDown"])[0]["metric"]["instance"] == "probe-test"
        finally:
            for proc in (daemon, prom_proc):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        _, err = daemon.communicate(timeout=10)
    assert not re.search(r"\b(?:\d{1,3}\.){3}\d{1,3}\b", err.replace("127.0.0.1", "")), "a log line has an IP"
    assert shutil.which  # keep the import used for readers of the skip reason
