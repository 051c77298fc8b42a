"""Grafana dashboards as code (Grafana foundation SDK): ``python deploy/grafana/dashboards.py`` writes the JSON.

Why the foundation SDK: it is generated from Grafana's own schemas, so a dashboard built with its
builders is one that Grafana's models accept, panel options and all; the test that proves the
dashboards (tests/test_deploy.py) loads every committed file back into the SDK's models and finds
the same JSON, so nothing Grafana would not understand (an unknown key, a ``null`` colour, a
threshold without a base step) can slip in. grafanalib, which generated them before, wrote JSON
whose table panels had no label columns and whose stat panels averaged over the time range.

The committed JSON in ``dashboards/`` is what Grafana loads (provisioning); a test fails when it is
not what this script generates, and the end-to-end tests run every panel query against a real
Prometheus and VictoriaMetrics (the fleet dashboard's collector rows with a real collector:
tests/fleet/test_fleet_dashboard_e2e.py).

Every query reads only ``probe_*`` families documented in docs/metrics.md. The ``instance`` label
tells probes apart (one Prometheus can scrape many volunteers' probes); deploy/prometheus.yml sets
it to a readable name.

Panel rules kept here: a table runs an instant query formatted as a table (one row per series,
one column per label); a stat shows the last value (``lastNotNull``), never a mean over the range;
every threshold list starts with a base step.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models.dashboard import Dashboard
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "dashboards"
DS = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def _q(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    if instant:  # a table: the last value of each series, one column per label
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _grid(h: int, w: int, x: int, y: int) -> dashboard.GridPos:
    return dashboard.GridPos(h=h, w=w, x=x, y=y)


def _steps(base: str, *steps: tuple[float, str]) -> dash_b.ThresholdsConfig:
    """Absolute thresholds that start with a base step (Grafana needs it: ``value`` null, the base colour)."""
    return dash_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(
        [dashboard.Threshold(value=None, color=base), *(dashboard.Threshold(value=v, color=c) for v, c in steps)])


def _map(options: dict[str, tuple[str, str]]) -> list[dashboard.ValueMap]:
    """Value mappings: value -> (text, colour)."""
    return [dashboard.ValueMap(options={
        value: dashboard.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(options.items())})]


ACCESSIBLE = _map({"0": ("not accessible", "red"), "1": ("accessible", "green")})
OK_FAIL = _map({"0": ("fail", "red"), "1": ("ok", "green")})
LAST = common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _templates(board: dash_b.Dashboard, *extra: dash_b.QueryVariable) -> dash_b.Dashboard:
    board = board.with_variable(
        dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(dashboard.VariableOption(selected=True, text="Prometheus", value="Prometheus")))
    board = board.with_variable(
        dash_b.QueryVariable("instance").label("Probe").datasource(DS)
        .query("label_values(probe_build_info, instance)").include_all(True).multi(True).all_value(".*")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all")))
    for variable in extra:
        board = board.with_variable(variable)
    return board


def _annotations(board: dash_b.Dashboard, selector: str) -> dash_b.Dashboard:
    def one(name: str, expr: str, color: str) -> dash_b.AnnotationQuery:
        return (dash_b.AnnotationQuery().name(name).datasource(DS).enable(True).icon_color(color)
                .expr(expr))

    return (board
            .annotation(dash_b.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True).hide(True)
                        .icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                        .datasource(dashboard.DataSourceRef(type_val="grafana", uid="-- Grafana --")))
            .annotation(one("Blocking and throttling events", f"probe_event_active{{{selector}}} == 1", "red"))
            .annotation(one("Blocking verdicts", f"probe_blocking{{{selector}}} == 1", "orange")))


def _board(uid: str, title: str, description: str) -> dash_b.Dashboard:
    return (dash_b.Dashboard(title).uid(uid).tags(["probe", "censorship"]).timezone("utc").description(description)
            .refresh("1m").time("now-24h", "now").editable())


def _bars(panel: timeseries.Panel) -> timeseries.Panel:
    return (panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
            .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL)))


def overview() -> dash_b.Dashboard:
    sel = 'instance=~"$instance"'
    board = _board("probe-overview", "Probe: overview",
                   "Reachability of messaging and cloud services as seen by each probe.")
    board = _annotations(_templates(board), sel)
    return (board
            .with_panel(statetimeline.Panel().title("Services × probes: accessible").datasource(DS)
                        .grid_pos(_grid(9, 24, 0, 0))
                        .description("Worst verdict over the service's targets, per probe (1 accessible, 0 not).")
                        .with_target(_q(f"min by (service, instance) (probe_accessible{{{sel}}})",
                                        "{{service}} @ {{instance}}"))
                        .mappings(ACCESSIBLE).thresholds(_steps("red", (1, "green")))
                        .merge_values(True).show_value(common.VisibilityMode.NEVER))
            .with_panel(table.Panel().title("Blocked now").datasource(DS).grid_pos(_grid(8, 12, 0, 9))
                        .description("Targets whose last verdict names a blocking type.")
                        .with_target(_q(f"max by (instance, service, target, type) (probe_blocking{{{sel}}} == 1)",
                                        instant=True))
                        .with_transformation(dashboard.DataTransformerConfig(
                            id_val="organize", options={"excludeByName": {"Time": True, "Value": True}})))
            .with_panel(_bars(timeseries.Panel().title("Blocked targets by type").datasource(DS)
                              .grid_pos(_grid(8, 12, 12, 9))
                              .with_target(_q(f"count by (type) (probe_blocking{{{sel}}} == 1)", "{{type}}"))))
            .with_panel(_bars(timeseries.Panel().title("Failure reasons over time").datasource(DS)
                              .grid_pos(_grid(9, 24, 0, 17))
                              .description("Failed checks by failure (the fixed vocabulary of probe.core.failures) "
                                           "and check.")
                              .with_target(_q(f"sum by (check, failure) (increase(probe_check_failures_total"
                                              f"{{{sel}}}[{RATE}]))", "{{check}}: {{failure}}"))))
            .with_panel(stat.Panel().title("Oldest result age").datasource(DS).grid_pos(_grid(5, 6, 0, 26))
                        .description("Time since each probe's oldest target was last measured (now, not averaged).")
                        .unit("s").reduce_options(LAST).thresholds(_steps("green", (900, "orange"), (3600, "red")))
                        .with_target(_q(f"max by (instance) (time() - probe_last_check_timestamp_seconds{{{sel}}})",
                                        "{{instance}}")))
            .with_panel(timeseries.Panel().title("Scheduler lag (p95)").datasource(DS).grid_pos(_grid(5, 6, 6, 26))
                        .unit("s")
                        .with_target(_q(f"histogram_quantile(0.95, sum by (le, instance) "
                                        f"(rate(probe_scheduler_lag_seconds_bucket{{{sel}}}[{RATE}])))",
                                        "{{instance}}")))
            .with_panel(timeseries.Panel().title("Runs in flight and queued").datasource(DS)
                        .grid_pos(_grid(5, 6, 12, 26))
                        .with_target(_q(f"sum by (instance) (probe_measurements_in_flight{{{sel}}})",
                                        "in flight {{instance}}"))
                        .with_target(_q(f"sum by (instance) (probe_scheduler_queue_depth{{{sel}}})",
                                        "queued {{instance}}", "B")))
            .with_panel(stat.Panel().title("Config reload OK").datasource(DS).grid_pos(_grid(5, 6, 18, 26))
                        .description("Whether each probe's last configuration reload succeeded (now).")
                        .reduce_options(LAST).mappings(_map({"0": ("FAILED", "red"), "1": ("ok", "green")}))
                        .thresholds(_steps("red", (1, "green")))
                        .with_target(_q(f"min by (instance) (probe_config_last_reload_successful{{{sel}}})",
                                        "{{instance}}"))))


def service() -> dash_b.Dashboard:
    sel = 'service="$service", instance=~"$instance"'
    service_var = (dash_b.QueryVariable("service").label("Service").datasource(DS)
                   .query("label_values(probe_reachable, service)")
                   .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
                   .sort(dashboard.VariableSort.ALPHABETICAL_ASC))
    board = _board("probe-service", "Probe: service drill-down",
                   "One service: each check layer, phase timings, throughput against its control.")
    board = _annotations(_templates(board, service_var), sel)
    return (board
            .with_panel(statetimeline.Panel().title("DNS, TCP, TLS and HTTP success by target").datasource(DS)
                        .grid_pos(_grid(10, 24, 0, 0))
                        .with_target(_q(f"min by (target, check) "
                                        f'(probe_reachable{{{sel}, check=~"dns|tcp|tls|http|quic"}})',
                                        "{{target}} {{check}}"))
                        .mappings(OK_FAIL).thresholds(_steps("red", (1, "green")))
                        .merge_values(True).show_value(common.VisibilityMode.NEVER))
            .with_panel(timeseries.Panel().title("Success ratio by check").datasource(DS)
                        .grid_pos(_grid(8, 12, 0, 10)).unit("percentunit").min(0).max(1)
                        .with_target(_q(f'avg by (check) (probe_reachable{{{sel}, check=~"dns|tcp|tls|http"}})',
                                        "{{check}}")))
            .with_panel(timeseries.Panel().title("Phase timings (slowest target)").datasource(DS)
                        .grid_pos(_grid(8, 12, 12, 10)).unit("s")
                        .with_target(_q(f"max by (check, phase) "
                                        f'(probe_check_duration_seconds{{{sel}, phase!="total"}})',
                                        "{{check}} {{phase}}")))
            .with_panel(timeseries.Panel().title("Throughput: target vs control").datasource(DS)
                        .grid_pos(_grid(8, 12, 0, 18)).unit("Bps")
                        .description("Plateau rates of the target and control-SNI flows of the throttling test.")
                        .with_target(_q(f"avg by (role) (probe_throughput_bytes_per_second{{{sel}}})", "{{role}}")))
            .with_panel(timeseries.Panel().title("Blocking verdicts by type").datasource(DS)
                        .grid_pos(_grid(8, 12, 12, 18))
                        .with_target(_q(f"max by (target, type) (probe_blocking{{{sel}}})", "{{target}} {{type}}")))
            .with_panel(_bars(timeseries.Panel().title("Failure reasons").datasource(DS).grid_pos(_grid(8, 12, 0, 26))
                              .with_target(_q(f"sum by (check, failure) (increase(probe_check_failures_total"
                                              f"{{{sel}}}[{RATE}]))", "{{check}}: {{failure}}"))))
            .with_panel(table.Panel().title("TLS certificate expiry (days)").datasource(DS)
                        .grid_pos(_grid(8, 6, 12, 26)).decimals(1)
                        .thresholds(_steps("red", (7, "orange"), (30, "green")))
                        .with_target(_q(f"min by (target) (probe_tls_cert_expiry_timestamp_seconds{{{sel}}} - time())"
                                        " / 86400", instant=True))
                        .with_transformation(dashboard.DataTransformerConfig(
                            id_val="organize", options={"excludeByName": {"Time": True},
                                                        "renameByName": {"Value": "days left"}})))
            .with_panel(table.Panel().title("Circumvention reachable").datasource(DS).grid_pos(_grid(8, 6, 18, 26))
                        .mappings(_map({"0": ("blocked", "red"), "1": ("reachable", "green")}))
                        .with_target(_q(f"max by (target, protocol) (probe_circumvention_reachable{{{sel}}})",
                                        instant=True))
                        .with_transformation(dashboard.DataTransformerConfig(
                            id_val="organize", options={"excludeByName": {"Time": True},
                                                        "renameByName": {"Value": "reachable"}}))))


# -- The fleet (many probes in one VictoriaMetrics, each series labelled probe, cc, asn) -----------

#: The selected networks; every fleet query starts from it.
NET = 'cc=~"$cc", asn=~"$asn"'


def _fleet_var(name: str, label: str, query: str) -> dash_b.QueryVariable:
    return (dash_b.QueryVariable(name).label(label).datasource(DS).query(query).include_all(True).multi(True)
            .all_value(".*").refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
            .current(dashboard.VariableOption(selected=True, text="All", value="$__all")))


#: Probes per (network, service, state), recorded by deploy/rules/fleet.rules.yml from each probe's
#: ``probe_service_state`` (the probe rolls its targets' verdicts up itself; vmagent sends nothing
#: per target). A few thousand series at 10,000 probes, where the per-probe ones are 140,000.
COUNTS = "asn_service:probe_service_state:count"


def _counted(states: str) -> str:
    """Probes of each (service, network) in one of ``states`` (a regex of probe_service_state states)."""
    return f'sum by (service, cc, asn) ({COUNTS}{{{NET}, service=~"$service", state=~"{states}"}})'


#: The network's probes that measure the service (every state: a probe's service is in one).
PROBES = _counted(".*")


def _cells(states: str) -> str:
    """Like :func:`_counted`, with 0 for the (service, network) cells where no probe is in ``states``."""
    return f"{_counted(states)} or 0 * {PROBES}"


#: The states of a (probe, service), as the overview counts them per network (column -> probes).
STATES = {
    "blocked": _cells("blocked"),
    "throttled": _cells("throttled"),
    "withheld by origin": _cells("origin-withheld"),
    "outage": _cells("inconclusive"),
    "ok": _cells("ok"),
}


def _link(title: str, url: str) -> dashboard.DynamicConfigValue:
    return dashboard.DynamicConfigValue(id_val="links", value=[{"title": title, "url": url}])


#: Drill-down: a network cell opens this dashboard on that network; a probe opens its own dashboard.
TO_NETWORK = _link("Probes of this network", "/d/probe-fleet/?var-cc=${__data.fields.cc}"
                   "&var-asn=${__data.fields.asn}&var-service=${__data.fields.service}&${__url_time_range}")
#: The central store holds each probe's per-service states, not its per-target series (vmagent sends
#: only what the fleet reads: docs/fleet.md), so a probe opens this dashboard on that probe.
TO_PROBE = _link("This probe's services", "/d/probe-fleet/?var-cc=${__data.fields.cc}"
                 "&var-asn=${__data.fields.asn}&var-probe=${__data.fields.probe}&${__url_time_range}")
#: The selected probes (all by default), for the panels that list single probes.
PROBE = 'probe=~"$probe"'


def _table(title: str, grid: dashboard.GridPos, description: str, *queries: tuple[str, str],
           renames: dict[str, str] | None = None) -> table.Panel:
    """An instant table; several queries are merged into one row per label set, one column per query."""
    panel = table.Panel().title(title).datasource(DS).grid_pos(grid).description(description)
    for ref, expr in queries:
        panel = panel.with_target(_q(expr, ref=ref, instant=True))
    if len(queries) > 1:
        panel = panel.with_transformation(dashboard.DataTransformerConfig(id_val="merge", options={}))
    return (panel.with_transformation(dashboard.DataTransformerConfig(
        id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": renames or {}}))
        .override_by_name("asn", [TO_NETWORK]).override_by_name("probe", [TO_PROBE]))


def fleet() -> dash_b.Dashboard:
    board = (_board("probe-fleet", "Fleet: services by country and network",
                    "Which services are blocked or throttled, in which networks (ASN), since when, and seen by "
                    "what share of the probes there; outages told apart. Data: every probe's metrics in one "
                    "VictoriaMetrics (vmagent, docs/fleet.md).")
             .with_variable(dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
                            .current(dashboard.VariableOption(selected=True, text="Prometheus", value="Prometheus")))
             .with_variable(_fleet_var("cc", "Country", "label_values(probe_build_info, cc)"))
             .with_variable(_fleet_var("asn", "Network (ASN)", 'label_values(probe_build_info{cc=~"$cc"}, asn)'))
             .with_variable(_fleet_var("service", "Service", f"label_values({COUNTS}, service)"))
             .with_variable(_fleet_var("probe", "Probe",
                                       'label_values(probe_build_info{cc=~"$cc", asn=~"$asn"}, probe)'))
             .link(dash_b.DashboardLink("Per-probe dashboards").type(dashboard.DashboardLinkType.DASHBOARDS)
                   .tags(["probe"]).as_dropdown(True).include_vars(False).keep_time(True)))
    counts = list(zip("ABCDE", STATES.values(), strict=True))
    probes = ("F", PROBES)
    shares = ("G", f"({STATES['blocked']}) / {PROBES}")
    names = {f"Value #{ref}": name for ref, name in zip("ABCDEFG", [*STATES, "probes", "share blocked"], strict=True)}
    events = f'probe_event_active{{{NET}, {PROBE}, service=~"$service"}}'
    up = f'up{{job="probe", {NET}, {PROBE}}}'
    return (board
            .with_panel(_table("Services × networks now", _grid(10, 24, 0, 0),
                               "Per service and network: how many probes see it blocked, throttled, withheld by its "
                               "origin (HTTP 451: not the network), in an outage (their controls fail too: not "
                               "censorship) or ok, and the share of the network's "
                               "probes that see blocking. Click an ASN for its probes.",
                               *counts, probes, shares, renames=names)
                        .unit("short"))
            .with_panel(statetimeline.Panel().title("Share of probes seeing blocking, per network").datasource(DS)
                        .grid_pos(_grid(9, 24, 0, 10)).unit("percentunit").min(0).max(1)
                        .description("Of the probes of each network that measure the service, the share whose "
                                     "verdict names a blocking type (throttling included). One probe alone may "
                                     "be its own link; many probes of one network is the network.")
                        .with_target(_q(f"{_counted('blocked|throttled')} / {PROBES}",
                                        "{{service}} {{cc}} {{asn}}"))
                        .thresholds(_steps("green", (0.01, "orange"), (0.5, "red")))
                        .merge_values(True).show_value(common.VisibilityMode.NEVER))
            .with_panel(statetimeline.Panel().title("Events per probe (start to end)").datasource(DS)
                        .grid_pos(_grid(9, 24, 0, 19))
                        .description("Each probe's detected blocking and throttling events: a bar from the event's "
                                     "start to its end (probe_event_active).")
                        .with_target(_q(f"max by (probe, cc, asn, service, type) ({events})",
                                        "{{service}} {{type}} @ {{probe}} ({{cc}} {{asn}})"))
                        .mappings(_map({"1": ("event", "red")})).thresholds(_steps("red"))
                        .merge_values(True).show_value(common.VisibilityMode.NEVER))
            .with_panel(_table("Ongoing events", _grid(8, 12, 0, 28),
                               "Events going on now, with their start (bounded between the last good and the "
                               "first bad measurement). Click a probe for its own dashboard.",
                               ("A", f'max by (probe, cc, asn, service, type) (probe_event_start_timestamp_seconds'
                                     f'{{{NET}, {PROBE}, service=~"$service"}}) * 1000'),
                               renames={"Value": "since"})
                        .unit("dateTimeAsIso"))
            .with_panel(_table("Probes seeing blocking or throttling", _grid(8, 12, 12, 28),
                               "Drill-down: the probes of the selected networks that see the service blocked or "
                               "throttled now. Click a probe for all its services.",
                               ("A", f'probe_service_state{{{NET}, {PROBE}, service=~"$service", '
                                     'state=~"blocked|throttled"} == 1'))
                        .with_transformation(dashboard.DataTransformerConfig(
                            id_val="organize", options={"excludeByName": {"Value": True, "__name__": True}})))
            .with_panel(stat.Panel().title("Probes reporting").datasource(DS).grid_pos(_grid(5, 6, 0, 36))
                        .description("Probes whose vmagent scraped their daemon in the last scrape (up == 1).")
                        .reduce_options(LAST).thresholds(_steps("red", (1, "green")))
                        .with_target(_q(f"count({up} == 1) or vector(0)")))
            .with_panel(stat.Panel().title("Probe daemons down").datasource(DS).grid_pos(_grid(5, 6, 6, 36))
                        .description("Probes whose vmagent reports its daemon down (up == 0); a probe whose host "
                                     "is off sends nothing: see the result age table.")
                        .reduce_options(LAST).thresholds(_steps("green", (1, "red")))
                        .with_target(_q(f"count({up} == 0) or vector(0)")))
            .with_panel(timeseries.Panel().title("Probes reporting by country").datasource(DS)
                        .grid_pos(_grid(5, 12, 12, 36))
                        .with_target(_q(f"count by (cc) ({up} == 1)", "{{cc}}")))
            .with_panel(_table("Probe health: newest result age", _grid(8, 24, 0, 41),
                               "Per probe: seconds since its newest measurement reached this store (over the last "
                               "day: a probe silent for hours still shows here), and whether its daemon is up.",
                               ("A", f"time() - max by (probe, cc, asn) "
                                     f"(max_over_time(probe_last_result_timestamp_seconds{{{NET}, {PROBE}}}[1d]))"),
                               ("B", f"max by (probe, cc, asn) ({up})"),
                               renames={"Value #A": "newest result age (s)", "Value #B": "up"})
                        .thresholds(_steps("green", (900, "orange"), (3600, "red"))))
            .with_panel(_table("Services of the selected probes", _grid(8, 24, 0, 49),
                               "The last level of the drill-down: each selected probe's state for each "
                               "service, as the probe rolled up its targets' verdicts (probe_service_state). "
                               "The targets' own verdicts stay on the probe and in its uploaded measurements.",
                               ("A", f'probe_service_state{{{NET}, {PROBE}, service=~"$service"}} == 1'))
                        .with_transformation(dashboard.DataTransformerConfig(
                            id_val="organize", options={"excludeByName": {"Value": True, "__name__": True}}))))


# -- The fleet's collector: fleet events and upload health (rows below the per-probe panels) ------

#: Series that only a fleet with a collector has (its own /metrics, and the upload families of the
#: probes that upload to it): a single probe's end-to-end tests leave the panels reading them to
#: tests/fleet/test_fleet_dashboard_e2e.py, which runs a collector.
COLLECTOR_SERIES = re.compile(r"\bprobe_(fleet_events?|collector|upload)_")

#: The selected networks and services, for the collector's events; a country-wide event (asn="")
#: stays in view whatever ASNs are selected.
EVENTS = 'cc=~"$cc", asn=~"$asn|", service=~"$service"'
#: A blocking in a network: one alert, one row, whatever the number of collectors exporting it
#: (each of its episodes also has an ``id`` label).
EVENT = "service, cc, asn, type"


def _bottom(board: dash_b.Dashboard) -> int:
    """The first free grid row below the panels built so far."""
    return max((p.grid_pos.y + p.grid_pos.h for p in board.build().panels or [] if p.grid_pos is not None),
               default=0)


def _row(board: dash_b.Dashboard, title: str) -> tuple[dash_b.Dashboard, int]:
    """An (expanded) row below everything, and the grid row of its first panels."""
    y = _bottom(board)
    return board.with_row(dash_b.Row(title).grid_pos(_grid(1, 24, 0, y))), y + 1


def _unit(name: str, unit: str) -> tuple[str, list[dashboard.DynamicConfigValue]]:
    return name, [dashboard.DynamicConfigValue(id_val="unit", value=unit)]


def _at_end(family: str) -> str:
    """The family's value at the end of the dashboard's range, at every step (``@ end()``): an event
    found late is drawn from its estimated start, not from when the collector first exported it."""
    return f"({family}{{{EVENTS}}} @ end())"


#: Per step, the share of each fleet event that had started by then and not ended yet; one row per
#: (service, network, kind), an event that ended and came back (another ``id``) on the same row.
TIMELINE = (f"max by ({EVENT}) ({_at_end('probe_fleet_event_share')}"
            f" and on (id) {_at_end('probe_fleet_event_start_timestamp_seconds')} <= time()"
            f" unless on (id) {_at_end('probe_fleet_event_end_timestamp_seconds')} <= time())")


def fleet_events(board: dash_b.Dashboard) -> dash_b.Dashboard:
    """Row "Fleet events": the collector's events per network (probe_fleet_event_*), one per event."""
    board, y = _row(board, "Fleet events (the collector: enough probes of a network see the same blocking)")
    of = f"max by ({EVENT}, id)"
    events = (_table("Fleet events: ongoing and ended in the last 7 days", _grid(8, 20, 4, y),
                     "One row per event the collector's job found: enough probes of the network (asn empty: the "
                     "whole country) see the same kind of blocking, outages excluded. Since and until: estimated "
                     "(between the last good and the first bad measurement, and back); no until: ongoing. Share: "
                     "of the network's reporting probes. The bounds: `probe collector events`. Click an ASN for "
                     "its probes.",
                     ("A", f"{of} (probe_fleet_event_start_timestamp_seconds{{{EVENTS}}}) * 1000"),
                     ("B", f"{of} (probe_fleet_event_end_timestamp_seconds{{{EVENTS}}}) * 1000"),
                     ("C", f"{of} (probe_fleet_event_share{{{EVENTS}}})"),
                     ("D", f"{of} (probe_fleet_event_probes{{{EVENTS}}})"),
                     renames={"Value #A": "since", "Value #B": "until", "Value #C": "share of probes",
                              "Value #D": "probes", "type": "kind"})
              .with_transformation(dashboard.DataTransformerConfig(
                  id_val="organize", options={"excludeByName": {"id": True}})))
    for name, properties in (_unit("since", "dateTimeAsIso"), _unit("until", "dateTimeAsIso"),
                             _unit("share of probes", "percentunit")):
        events = events.override_by_name(name, properties)
    return (board
            .with_panel(stat.Panel().title("Fleet events now").datasource(DS).grid_pos(_grid(8, 4, 0, y))
                        .description("Ongoing fleet events in the selected countries, networks and services: each "
                                     "is one alert (FleetCensorshipEvent), not one per probe.")
                        .reduce_options(LAST).thresholds(_steps("green", (1, "red")))
                        .with_target(_q(f"count(max by ({EVENT}) (probe_fleet_event_active{{{EVENTS}}}) == 1)"
                                        " or vector(0)")))
            .with_panel(events)
            .with_panel(statetimeline.Panel().title("Fleet events on a time line (share of probes)").datasource(DS)
                        .grid_pos(_grid(9, 24, 0, y + 8)).unit("percentunit").min(0).max(1)
                        .description("A bar per fleet event from its estimated start to its end (ongoing: to now), "
                                     "valued by the share of the network's probes that see it. Drawn from what "
                                     "the collector exports at the end of the time range: the ongoing events and "
                                     "those ended in the 7 days before.")
                        .with_target(_q(TIMELINE, "{{service}} {{type}} in {{cc}} {{asn}}"))
                        .thresholds(_steps("orange", (0.5, "red")))
                        .merge_values(True).show_value(common.VisibilityMode.AUTO)))


def fleet_health(board: dash_b.Dashboard) -> dash_b.Dashboard:
    """Row "Fleet health": uploads from the probes (probe_upload_*) and at the collector (lag, batches)."""
    board, y = _row(board, "Fleet health (uploads to the collector)")
    lag = (timeseries.Panel().title("Upload lag at the collector").datasource(DS).grid_pos(_grid(10, 12, 12, y))
           .unit("s").description("Time from a measurement's start to its storing at the collector (all probes: "
                                  "the collector has no per-probe label). A probe uploading every minute stays "
                                  "near a minute; a backlog after an outage shows as hours."))
    for ref, q, legend in (("A", "0.5", "p50"), ("B", "0.95", "p95"), ("C", "0.99", "p99")):
        lag = lag.with_target(_q(f"histogram_quantile({q}, sum by (le) "
                                 f"(rate(probe_collector_upload_lag_seconds_bucket[{RATE}])))", legend, ref))
    probe_up = "max by (probe, cc, asn)"
    return (board
            .with_panel(stat.Panel().title("Probes uploaded in the last hour").datasource(DS)
                        .grid_pos(_grid(5, 6, 0, y))
                        .description("Probes whose collector acknowledged a batch in the last hour (their own "
                                     "probe_upload_last_success_timestamp_seconds).")
                        .reduce_options(LAST).thresholds(_steps("red", (1, "green")))
                        .with_target(_q(f"count(time() - probe_upload_last_success_timestamp_seconds{{{NET}}} "
                                        "< 3600) or vector(0)")))
            .with_panel(stat.Panel().title("Measurements waiting to upload").datasource(DS)
                        .grid_pos(_grid(5, 6, 6, y))
                        .description("Measurements in the probes' local stores not uploaded yet (all selected "
                                     "probes).")
                        .reduce_options(LAST).thresholds(_steps("green", (10_000, "orange")))
                        .with_target(_q(f"sum(probe_upload_pending{{{NET}}}) or vector(0)")))
            .with_panel(lag)
            .with_panel(timeseries.Panel().title("Upload batches at the collector").datasource(DS)
                        .grid_pos(_grid(5, 12, 0, y + 5))
                        .description("Batches per second by result (all collectors): accepted, or why refused.")
                        .with_target(_q(f"sum by (result) (rate(probe_collector_batches_total[{RATE}]))",
                                        "{{result}}")))
            .with_panel(_table("Probe uploads", _grid(8, 16, 0, y + 10),
                               "Per probe: seconds since its collector last acknowledged a batch (empty: never), "
                               "measurements waiting, and failed attempts in the last hour.",
                               ("A", f"time() - {probe_up} (probe_upload_last_success_timestamp_seconds{{{NET}}} "
                                     "> 0)"),
                               ("B", f"{probe_up} (probe_upload_pending{{{NET}}})"),
                               ("C", f"sum by (probe, cc, asn) (increase(probe_upload_errors_total{{{NET}}}[1h]))"),
                               renames={"Value #A": "last upload (s ago)", "Value #B": "pending",
                                        "Value #C": "errors (1 h)"}))
            .with_panel(timeseries.Panel().title("Fleet events job runs").datasource(DS)
                        .grid_pos(_grid(8, 8, 16, y + 10))
                        .description("Runs of the collectors' fleet events job: one collector at a time detects, "
                                     "the others stand by; errors stop the events (FleetEventsJobFailing).")
                        .with_target(_q(f"sum by (result) (increase(probe_fleet_events_runs_total[{RATE}]))",
                                        "{{result}}"))))


def fleet_overview() -> dash_b.Dashboard:
    """The fleet dashboard: the probes' panels, then the collector's rows."""
    return fleet_health(fleet_events(fleet()))


DASHBOARDS = {"probe-overview.json": overview, "probe-service.json": service, "probe-fleet.json": fleet_overview}


def to_json(board: dash_b.Dashboard) -> str:
    """The dashboard's JSON as committed: panel ids in order, sorted keys, and the plugins' defaults
    written out (decoded once by Grafana's models), so that loading it changes nothing."""
    register_default_plugins()
    model = board.build()
    for i, panel in enumerate(model.panels or [], start=1):
        panel.id_val = i
    settled = Dashboard.from_json(json.loads(json.dumps(model, cls=JSONEncoder)))
    return json.dumps(settled, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args(argv)
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        text, path = to_json(build()), OUT / name
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
