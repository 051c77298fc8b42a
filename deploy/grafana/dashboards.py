"""Grafana dashboards as code (grafanalib): ``python deploy/grafana/dashboards.py`` writes the JSON.

Why grafanalib rather than grafana-foundation-sdk: the project is Python and
grafanalib is a small, pure-Python, pip-installable library whose panels map one
to one onto what we need (time series, state timeline, table, stat); the
foundation SDK is generated from Grafana's schemas and tracks new Grafana
versions more closely, but its Python builder API was still pre-1.0 and changes
between Grafana releases, which would make the committed JSON churn.

The committed JSON in ``dashboards/`` is what Grafana loads (provisioning); a test
(tests/test_deploy.py) fails when it is not what this script generates, and the
end-to-end test runs every panel query against a real Prometheus.

Every query reads only ``probe_*`` families documented in docs/metrics.md. The
``instance`` label tells probes apart (one Prometheus can scrape many volunteers'
probes); deploy/prometheus.yml sets it to a readable name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Annotations,
    Dashboard,
    GridPos,
    Stat,
    StateTimeline,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def _q(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, datasource=DS)


def _templates(*extra: Template) -> Templating:
    return Templating(list=[
        Template(name="datasource", label="Data source", type="datasource", query="prometheus", default="Prometheus"),
        Template(name="instance", label="Probe", dataSource="${datasource}", type="query", includeAll=True,
                 multi=True, default="$__all", allValue=".*", refresh=2, sort=1,
                 query="label_values(probe_build_info, instance)"),
        *extra,
    ])


def _annotations(selector: str) -> Annotations:
    def one(name: str, expr: str, color: str, title: str) -> dict[str, Any]:
        return {"name": name, "datasource": DS, "enable": True, "iconColor": color, "expr": expr, "step": "60s",
                "titleFormat": title, "textFormat": "{{service}} / {{target}}", "tagKeys": "type,service",
                "useValueForTime": False}

    return Annotations(list=[
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
         "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
        one("Blocking and throttling events", f"probe_event_active{{{selector}}} == 1", "red",
            "{{type}} event on {{target}}"),
        one("Blocking verdicts", f"probe_blocking{{{selector}}} == 1", "orange", "{{type}} blocking of {{target}}"),
    ])


ACCESSIBLE_MAP = [{"type": "value", "options": {
    "0": {"text": "not accessible", "color": "red"}, "1": {"text": "accessible", "color": "green"}}}]


def overview() -> Dashboard:
    sel = 'instance=~"$instance"'
    panels = [
        StateTimeline(
            title="Services × probes: accessible", dataSource=DS, gridPos=GridPos(h=9, w=24, x=0, y=0),
            description="Worst verdict over the service's targets, per probe (1 accessible, 0 not).",
            targets=[_q(f"min by (service, instance) (probe_accessible{{{sel}}})", "{{service}} @ {{instance}}")],
            mappings=ACCESSIBLE_MAP, mergeValues=True, showValue="never",
        ),
        Table(
            title="Blocked now", dataSource=DS, gridPos=GridPos(h=8, w=12, x=0, y=9),
            description="Targets whose last verdict names a blocking type.",
            targets=[_q(f"max by (instance, service, target, type) (probe_blocking{{{sel}}} == 1)", instant=True)],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
        ),
        TimeSeries(
            title="Blocked targets by type", dataSource=DS, gridPos=GridPos(h=8, w=12, x=12, y=9),
            targets=[_q(f"count by (type) (probe_blocking{{{sel}}} == 1)", "{{type}}")],
            drawStyle="bars", stacking={"mode": "normal"},
        ),
        TimeSeries(
            title="Failure reasons over time", dataSource=DS, gridPos=GridPos(h=9, w=24, x=0, y=17),
            description="Failed checks by failure (the fixed vocabulary of probe.core.failures) and check.",
            targets=[_q(f"sum by (check, failure) (increase(probe_check_failures_total{{{sel}}}[{RATE}]))",
                        "{{check}}: {{failure}}")],
            drawStyle="bars", stacking={"mode": "normal"},
        ),
        Stat(
            title="Oldest result age", dataSource=DS, gridPos=GridPos(h=5, w=6, x=0, y=26), format="s",
            targets=[_q(f"max by (instance) (time() - probe_last_check_timestamp_seconds{{{sel}}})", "{{instance}}")],
        ),
        TimeSeries(
            title="Scheduler lag (p95)", dataSource=DS, gridPos=GridPos(h=5, w=6, x=6, y=26), unit="s",
            targets=[_q(f"histogram_quantile(0.95, sum by (le, instance) "
                        f"(rate(probe_scheduler_lag_seconds_bucket{{{sel}}}[{RATE}])))", "{{instance}}")],
        ),
        TimeSeries(
            title="Runs in flight and queued", dataSource=DS, gridPos=GridPos(h=5, w=6, x=12, y=26),
            targets=[_q(f"sum by (instance) (probe_measurements_in_flight{{{sel}}})", "in flight {{instance}}"),
                     _q(f"sum by (instance) (probe_scheduler_queue_depth{{{sel}}})", "queued {{instance}}", "B")],
        ),
        Stat(
            title="Config reload OK", dataSource=DS, gridPos=GridPos(h=5, w=6, x=18, y=26),
            targets=[_q(f"min by (instance) (probe_config_last_reload_successful{{{sel}}})", "{{instance}}")],
            mappings=[{"type": "value", "options": {"0": {"text": "FAILED", "color": "red"},
                                                    "1": {"text": "ok", "color": "green"}}}],
        ),
    ]
    return Dashboard(
        title="Probe: overview", uid="probe-overview", tags=["probe", "censorship"], timezone="utc",
        description="Reachability of messaging and cloud services as seen by each probe.",
        templating=_templates(), annotations=_annotations(sel), panels=panels, refresh="1m",
        links=[], time=Time("now-24h", "now"),
    ).auto_panel_ids()


def service() -> Dashboard:
    sel = 'service="$service", instance=~"$instance"'
    service_var = Template(name="service", label="Service", dataSource="${datasource}", type="query",
                           query="label_values(probe_reachable, service)", refresh=2, sort=1)
    panels = [
        StateTimeline(
            title="DNS, TCP, TLS and HTTP success by target", dataSource=DS, gridPos=GridPos(h=10, w=24, x=0, y=0),
            targets=[_q(f'min by (target, check) (probe_reachable{{{sel}, check=~"dns|tcp|tls|http|quic"}})',
                        "{{target}} {{check}}")],
            mappings=[{"type": "value", "options": {"0": {"text": "fail", "color": "red"},
                                                    "1": {"text": "ok", "color": "green"}}}],
            mergeValues=True, showValue="never",
        ),
        TimeSeries(
            title="Success ratio by check", dataSource=DS, gridPos=GridPos(h=8, w=12, x=0, y=10), unit="percentunit",
            targets=[_q(f'avg by (check) (probe_reachable{{{sel}, check=~"dns|tcp|tls|http"}})', "{{check}}")],
        ),
        TimeSeries(
            title="Phase timings (slowest target)", dataSource=DS, gridPos=GridPos(h=8, w=12, x=12, y=10), unit="s",
            targets=[_q(f'max by (check, phase) (probe_check_duration_seconds{{{sel}, phase!="total"}})',
                        "{{check}} {{phase}}")],
        ),
        TimeSeries(
            title="Throughput: target vs control", dataSource=DS, gridPos=GridPos(h=8, w=12, x=0, y=18), unit="Bps",
            description="Plateau rates of the target and control-SNI flows of the throttling test.",
            targets=[_q(f"avg by (role) (probe_throughput_bytes_per_second{{{sel}}})", "{{role}}")],
        ),
        TimeSeries(
            title="Blocking verdicts by type", dataSource=DS, gridPos=GridPos(h=8, w=12, x=12, y=18),
            targets=[_q(f"max by (target, type) (probe_blocking{{{sel}}})", "{{target}} {{type}}")],
        ),
        TimeSeries(
            title="Failure reasons", dataSource=DS, gridPos=GridPos(h=8, w=12, x=0, y=26),
            targets=[_q(f"sum by (check, failure) (increase(probe_check_failures_total{{{sel}}}[{RATE}]))",
                        "{{check}}: {{failure}}")],
            drawStyle="bars", stacking={"mode": "normal"},
        ),
        Table(
            title="TLS certificate expiry (days)", dataSource=DS, gridPos=GridPos(h=8, w=6, x=12, y=26),
            targets=[_q(f"min by (target) (probe_tls_cert_expiry_timestamp_seconds{{{sel}}} - time()) / 86400",
                        instant=True)],
        ),
        Table(
            title="Circumvention reachable", dataSource=DS, gridPos=GridPos(h=8, w=6, x=18, y=26),
            targets=[_q(f"max by (target, protocol) (probe_circumvention_reachable{{{sel}}})", instant=True)],
        ),
    ]
    return Dashboard(
        title="Probe: service drill-down", uid="probe-service", tags=["probe", "censorship"], timezone="utc",
        description="One service: each check layer, phase timings, throughput against its control.",
        templating=_templates(service_var), annotations=_annotations(sel), panels=panels, refresh="1m",
        time=Time("now-24h", "now"),
    ).auto_panel_ids()


DASHBOARDS = {"probe-overview.json": overview, "probe-service.json": service}


def render(build: Any) -> str:
    data = json.loads(json.dumps(build().to_json_data(), cls=DashboardEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args(argv)
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        text, path = render(build), OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run: python deploy/grafana/dashboards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
