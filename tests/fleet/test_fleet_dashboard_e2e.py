"""The fleet dashboard's collector rows and the fleet events alert, with the real binaries.

A real fleet event: the probes of :func:`tests.fleet.test_fleet_events.upload_fleet` upload a ban
in AS1 to a real collector on a real PostgreSQL, and two more collectors run the events job (one
at a time detects; both export the events). A real ``probe daemon`` uploads to the collector
(``settings.upload``) and its vmagent remote-writes its metrics. Then, with the scrape jobs as
shipped (``deploy/metrics/scrape.yml`` for VictoriaMetrics, ``deploy/prometheus.yml`` for
Prometheus; only the addresses and the interval changed):

* every query of the panels that read the collector's series (``COLLECTOR_SERIES``: the rows
  "Fleet events" and "Fleet health") returns data in VictoriaMetrics and in Prometheus, the
  ``or vector(0)`` fallbacks taken off;
* the events table shows what the collector's database holds (start, end, share, probes), and the
  time line draws each event from its estimated start (long before the collector found it) to its
  end: the ban, and an ended event written into the database beside it (one ended 8 days ago is
  no longer exported);
* deploy/rules/fleet-events.rules.yml in a real vmalert (notifying a receiver here) and in
  Prometheus: exactly one FleetCensorshipEvent alert per event, though two collectors export it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from probe.analysis.fleet_events import FleetEvent
from probe.cli import main
from probe.fleet import events as fleet_events
from probe.fleet.enrol import load
from probe.fleet.localpg import CollectorProcess
from probe.fleet.vmagent import vmagent_config
from tests.fleet.test_fleet_events import FLEET_EVENTS, upload_fleet
from tests.fleet.test_vmagent_e2e import AUTH, start_vmalert
from tests.service.test_daemon import targets_yaml
from tests.service.test_prometheus_e2e import PROMETHEUS, dashboard_queries, fast_rules, run_prometheus
from tests.vm import MISSING, SKIP_REASON, VMALERT, VictoriaMetrics, free_port, start_vmagent, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
Start = Callable[..., CollectorProcess]
#: The alerts expected: one per fleet event, labelled by the event (a country-wide event has no asn).
EXPECTED = {("messenger", "AA", network if scope == "asn" else "", kind) for scope, network, _, kind in FLEET_EVENTS}

pytestmark = [pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON),
              pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="needs /usr/bin/prometheus")]


def collector_job(config: Path, targets: list[str]) -> dict[str, Any]:
    """The shipped ``collector`` scrape job of ``config``, pointed at ``targets``, every second."""
    jobs = yaml.safe_load(config.read_text())["scrape_configs"]
    job: dict[str, Any] = next(j for j in jobs if j["job_name"] == "collector")
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": targets}])
    return job


def stamp(rfc3339: str) -> float:
    return dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An Alertmanager stand-in: (its URL, every alert vmalert posted to it)."""
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            posted.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posted
    finally:
        server.shutdown()
        thread.join(10)


def event_key(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(k, "") for k in ("service", "cc", "asn", "type"))


def ended_event(event_id: str, start: float, end: float) -> FleetEvent:
    """An ended event of the video service in AS2, as the job would store it."""
    return FleetEvent(id=event_id, scope="asn", network="AS2", cc="AA", asn="AS2", service="video", type="tcp_ip",
                      start_time=start, start_low=start - 60, start_high=start + 60, end_time=end, end_low=end - 60,
                      end_high=end + 60, probes=3, reporting=4, share=0.75, detected_at=start + 900,
                      updated_at=end + 900)


def bar(points: list[list[Any]]) -> tuple[float, float]:
    """The first and last step of a time line series with a value."""
    stamps = [float(t) for t, value in points if value not in ("NaN", None)]
    return stamps[0], stamps[-1]


def test_vmalert_loads_the_fleet_events_rules() -> None:
    """deploy/metrics' vmalert glob takes fleet-events.rules.yml (and not the promtool tests), and
    vmalert accepts it."""
    compose = yaml.safe_load((DEPLOY / "metrics" / "compose.yaml").read_text())
    glob = next(a for a in compose["services"]["vmalert"]["command"] if a.startswith("-rule="))
    pattern = Path(glob.removeprefix("-rule=")).name
    assert fnmatch.fnmatch("fleet-events.rules.yml", pattern)
    assert not fnmatch.fnmatch("fleet-events.rules.test.yml", pattern)
    vm = compose["services"]["victoriametrics"]
    assert "-promscrape.config=/etc/victoriametrics/scrape.yml" in vm["command"]
    assert "./scrape.yml:/etc/victoriametrics/scrape.yml:ro" in vm["volumes"]
    done = subprocess.run([VMALERT, f"-rule={DEPLOY / 'rules' / 'fleet-events.rules.yml'}", "-dryRun",
                           "-loggerLevel=ERROR"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_collector_panels_and_one_alert_per_fleet_event(
        db: str, token: str, collectors: Start, tmp_path: Path,
        receiver: tuple[str, list[dict[str, Any]]]) -> None:
    made, ingest = upload_fleet(db, token, collectors)
    ended = ended_event("e2e-ended", made - 2 * 3600, made - 3600)
    with psycopg.connect(db, autocommit=True) as conn:  # beside the job's own events; the collectors export both
        fleet_events.upsert(conn, [ended, ended_event("e2e-long-ago", made - 9 * 86400, made - 8 * 86400)])
    one, two = collectors(db, "--events-every", "1"), collectors(db, "--events-every", "1")
    addresses = [c.url.removeprefix("http://") for c in (ingest, one, two)]

    # A probe daemon that uploads to the collector every second, its vmagent writing to VictoriaMetrics.
    home = tmp_path / "probe"
    home.mkdir()
    store, conf, targets = home / "store.sqlite", home / "fleet.json", home / "targets.yaml"
    assert main(["enrol", ingest.url, token, "--store", str(store), "--config", str(conf)]) == 0
    targets.write_text(targets_yaml(["t1", "t2"], interval=1.0, settings=(
        f", probe_cc: DE, probe_asn: AS3320, upload: {{enabled: true, interval: 1, credential: {conf}}}")))
    probe_id = load(conf).probe_id
    scrape = tmp_path / "scrape.yml"
    scrape.write_text(yaml.safe_dump({"scrape_configs": [collector_job(DEPLOY / "metrics" / "scrape.yml",
                                                                       addresses)]}))
    vm = VictoriaMetrics(tmp_path / "vm", auth=AUTH, extra=[f"-promscrape.config={scrape}"]).start()
    procs: list[subprocess.Popen[Any]] = []
    try:
        probe_port, agent_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store", str(store),
             "--listen", f"127.0.0.1:{probe_port}", "--grace", "2",
             "--measure", "tests.service.test_daemon:fake_measure"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(home / "daemon.log").open("wb"),
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PROBE_INFORMED_CONSENT": "1"}))
        agent = vmagent_config(tmp_path / "vmagent", probe_id=probe_id, cc="DE", asn=3320,
                               remote_write_url=f"{vm.base}/api/v1/write", username=AUTH[0], password=AUTH[1],
                               metrics_address=f"127.0.0.1:{probe_port}", interval_seconds=1,
                               buffer_dir=tmp_path / "buffer", max_disk_usage="100MB",
                               listen=f"127.0.0.1:{agent_port}")
        procs.append(start_vmagent(agent.args, agent_port))
        rules = fast_rules(tmp_path, "fleet-events.rules.yml")
        prom_proc, prom = run_prometheus(tmp_path, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [collector_job(DEPLOY / "prometheus.yml", addresses),
                               {"job_name": "probe", "static_configs": [{"targets": [f"127.0.0.1:{probe_port}"]}]}]})
        procs.append(prom_proc)
        alert_port = free_port()
        procs.append(start_vmalert(rules, vm, f"-notifier.url={receiver[0]}", "-evaluationInterval=1s",
                                   port=alert_port))

        # -- the events reach both stores, from both collectors that run the job ------------------------
        for query in (vm.query, prom.query):
            wait_for(lambda q=query: len(q('probe_fleet_event_active{job="collector"} == 1')) == 2 * len(EXPECTED),
                     90, "both events exported by both collectors")
            wait_for(lambda q=query: len(q("probe_fleet_event_end_timestamp_seconds")) == 2, 30, "the ended event")
            wait_for(lambda q=query: q("probe_upload_last_success_timestamp_seconds > 0")
                     and q("rate(probe_collector_upload_lag_seconds_count[15s]) > 0"), 60, "the daemon's uploads")
        time.sleep(2)  # a few more scrapes inside the panels' rate windows
        now = time.time()
        missing = []
        for where, expr in dashboard_queries(collector=True):
            expr = expr.removesuffix(" or vector(0)")  # the fallback would hide an empty answer
            if not vm.query_range(expr, now - 60, now, 1):
                missing.append(("VictoriaMetrics", where, expr))
            if not prom.query_range(expr):
                missing.append(("Prometheus", where, expr))
        assert missing == [], f"collector panels without data: {missing}"

        # -- the panels say what the collector's database holds ------------------------------------------
        with psycopg.connect(db) as conn:
            stored = {(e["service"], e["cc"], e["asn"], e["type"]): e
                      for e in fleet_events.list_events(conn, ongoing=True)}
        assert set(stored) == EXPECTED
        queries = dict(dashboard_queries(collector=True))
        assert vm.query(queries["probe-fleet.json: Fleet events now"])[0]["value"][1] == str(len(EXPECTED))
        table = [expr for where, expr in dashboard_queries(collector=True)
                 if where == "probe-fleet.json: Fleet events: ongoing and ended in the last 7 days"]
        start, end, share, probes = ({event_key(r["metric"]): float(r["value"][1]) for r in vm.query(e)}
                                     for e in table)
        assert set(start) == set(share) == set(probes) == EXPECTED | {("video", "AA", "AS2", "tcp_ip")}
        assert end == {("video", "AA", "AS2", "tcp_ip"): pytest.approx(ended.end_time * 1000, abs=1)}  # type: ignore[operator]
        for key, event in stored.items():
            assert abs(start[key] - stamp(event["start_time"]) * 1000) < 1000, (key, start[key], event["start_time"])
            assert (share[key], probes[key]) == (event["share"], event["probes"]), key
        assert (share[("messenger", "AA", "AS1", "tcp_ip")], probes[("messenger", "AA", "AS1", "tcp_ip")]) == (1, 4)
        # the time line: each event from its estimated start (the ban's: hours before the job ran) to its end
        timeline = queries["probe-fleet.json: Fleet events on a time line (share of probes)"]
        window = {"start": str(made - 3 * 3600), "end": str(time.time()), "step": "60"}
        ban = stamp(stored[("messenger", "AA", "AS1", "tcp_ip")]["start_time"])
        for name, get in (("VictoriaMetrics", vm.get), ("Prometheus", prom.get)):
            bars = {event_key(r["metric"]): r["values"] for r in get("/api/v1/query_range", query=timeline,
                                                                     **window)["result"]}
            assert set(bars) == EXPECTED | {("video", "AA", "AS2", "tcp_ip")}, (name, set(bars))
            first, last = bar(bars[("messenger", "AA", "AS1", "tcp_ip")])
            assert ban <= first < ban + 60 and last > time.time() - 120, (name, first - ban)
            first, last = bar(bars[("video", "AA", "AS2", "tcp_ip")])
            assert ended.start_time <= first < ended.start_time + 60, (name, first - ended.start_time)
            assert ended.end_time - 60 <= last < ended.end_time, (name, last - ended.end_time)  # type: ignore[operator]

        # -- one alert per event: vmalert (its API and its notifications) and Prometheus ------------------
        def firing() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{alert_port}/api/v1/alerts", timeout=5) as resp:
                alerts = json.loads(resp.read())["data"]["alerts"]
            return [a for a in alerts if a["name"] == "FleetCensorshipEvent" and a["state"] == "firing"]

        wait_for(lambda: len(firing()) == len(EXPECTED), 30, "vmalert firing the fleet events")
        assert sorted(event_key(a["labels"]) for a in firing()) == sorted(EXPECTED)
        _, posted = receiver
        wait_for(lambda: {event_key(a["labels"]) for a in posted} == EXPECTED, 30, "the notifications")
        sent = {json.dumps(a["labels"], sort_keys=True) for a in posted}
        assert len(sent) == len(EXPECTED), sent  # not one per collector, not one per probe
        assert all("instance" not in a["labels"] and "probe" not in a["labels"] for a in posted)
        wait_for(lambda: prom.query('ALERTS{alertname="FleetCensorshipEvent", alertstate="firing"}'), 30,
                 "Prometheus firing the fleet events")
        assert sorted(event_key(r["metric"]) for r in prom.query(
            'ALERTS{alertname="FleetCensorshipEvent", alertstate="firing"}')) == sorted(EXPECTED)
    finally:
        for proc in procs:
            stop(proc)
        vm.stop()
