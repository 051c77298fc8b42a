"""deploy/: rules (promtool unit tests), scrape config, dashboards up to date, compose, systemd, image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool (Debian package prometheus) not installed")


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every query of every panel."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        data = json.loads(path.read_text())
        for panel in data["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def alert_rules() -> dict[str, str]:
    data = yaml.safe_load((DEPLOY / "rules" / "probe.rules.yml").read_text())
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"] if "alert" in r}


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    done = subprocess.run(["promtool", "test", "rules", "probe.rules.test.yml"], cwd=DEPLOY / "rules",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_prometheus_config_and_rules_are_valid() -> None:
    done = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=DEPLOY, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_required_alerts_exist() -> None:
    assert {"ProbeBlockingStarted", "ProbeThrottlingDetected", "ProbeStale", "ProbeDown",
            "ProbeConfigReloadFailed"} <= set(alert_rules())


def test_generated_dashboards_are_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(DEPLOY / "grafana" / "dashboards.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_dashboards_have_the_required_panels() -> None:
    titles = {(d, t) for d, t, _ in panel_queries()}
    overview = {t for d, t in titles if d == "probe-overview.json"}
    service = {t for d, t in titles if d == "probe-service.json"}
    assert {"Services × probes: accessible", "Failure reasons over time"} <= overview
    assert {"DNS, TCP, TLS and HTTP success by target", "Phase timings (slowest target)",
            "Throughput: target vs control"} <= service
    data = json.loads((DEPLOY / "grafana" / "dashboards" / "probe-overview.json").read_text())
    assert any("probe_event_active" in a.get("expr", "") for a in data["annotations"]["list"])


def dashboards() -> dict[str, dict[str, Any]]:
    paths = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    return {path.name: json.loads(path.read_text()) for path in paths}


def _nulls(value: Any, where: str = "") -> list[str]:
    """Paths of ``null`` values, other than a threshold's base step (``steps[0].value``, null by design)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{where}[{i}]")]
    return [where] if value is None and not where.endswith("steps[0].value") else []


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboards_load_into_grafana_models_strictly(name: str) -> None:
    """Grafana's own schemas (the foundation SDK's models) read every key back: decoded and encoded
    again, the dashboard is the same JSON, so no key is unknown to Grafana and none is lost; every
    panel's options and queries decode into the models of its plugin."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel
    from grafana_foundation_sdk.models.prometheus import Dataquery

    register_default_plugins()
    data = dashboards()[name]
    model = Dashboard.from_json(data)
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data
    assert model.schema_version == data["schemaVersion"] >= 39
    for panel in model.panels or []:
        if isinstance(panel, RowPanel):  # a row's title; its panels follow it in the list
            assert panel.panels == [] and not panel.collapsed, panel.title
            continue
        assert all(isinstance(q, Dataquery) for q in panel.targets or []), panel.title
        if panel.options is not None:  # the plugin's own Options model, not a bare dict
            plugin = panel.type_val.replace("-", "")
            assert type(panel.options).__module__.endswith(plugin), (panel.title, panel.options)
    assert _nulls(data) == []  # "color": null and the like crash Grafana's models


def test_tables_show_labels_and_stats_show_the_last_value() -> None:
    for name, data in dashboards().items():
        for panel in data["panels"]:
            where = f"{name}: {panel['title']}"
            if panel["type"] == "table":  # one row per series, one column per label
                assert all(t.get("instant") and t.get("format") == "table" for t in panel["targets"]), where
            if panel["type"] == "stat":  # the value now, not a mean over the time range
                assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], where
            steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
            if steps is not None:
                assert steps and steps[0]["value"] is None and all(s["color"] for s in steps), where


RECORDED = re.compile(r"\b[a-z_]+:[a-z_:]+")


def recording_rules() -> dict[str, str]:
    out = {}
    for path in sorted((DEPLOY / "rules").glob("*.rules.yml")):
        data = yaml.safe_load(path.read_text())
        out |= {r["record"]: r["expr"] for g in data["groups"] for r in g["rules"] if "record" in r}
    return out


def test_queries_only_use_documented_metrics() -> None:
    """Panels and rules read documented families, or series recorded by deploy/rules (``level:name:op``)."""
    documented = set(re.findall(r"`(probe_[a-z_]+)`", (ROOT / "docs" / "metrics.md").read_text()))
    records = recording_rules()
    used, recorded = set(), set()
    for expr in [e for _, _, e in panel_queries()] + list(alert_rules().values()) + list(records.values()):
        recorded |= set(RECORDED.findall(expr))
        used |= set(re.findall(r"\b(probe_[a-z_]+?)(?:_bucket)?\b", RECORDED.sub("", expr)))
    assert used and used <= documented, used - documented
    assert recorded <= set(records), recorded - set(records)


@needs_promtool
def test_fleet_recording_rules_are_valid() -> None:
    done = subprocess.run(["promtool", "check", "rules", "fleet.rules.yml"], cwd=DEPLOY / "rules",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_is_structurally_sound() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"probe", "prometheus", "grafana"}
    probe = services["probe"]
    assert (DEPLOY / probe["build"]["context"] / probe["build"]["dockerfile"]).is_file()
    assert probe["cap_drop"] == ["ALL"] and "ports" not in probe  # metrics only on the compose network
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert set(service.get("depends_on", [])) <= set(services)
        assert set(service.get("networks", [])) <= set(compose["networks"])
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    scrape = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert scrape == ["probe:9810"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_containerfile_copies_existing_files_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert re.search(r"^USER probe$", text, re.M)
    assert '"probe", "daemon"' in text and "0.0.0.0:9810" in text


def test_systemd_unit_is_sandboxed() -> None:
    text = (DEPLOY / "systemd" / "probe.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["DynamicUser"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["StateDirectory"] == "probe" and settings["NoNewPrivileges"] == "yes"
    assert settings["CapabilityBoundingSet"] == "" and settings["AmbientCapabilities"] == ""
    assert "/var/lib/probe/" in settings["ExecStart"] and "kill -HUP" in settings["ExecReload"]
    assert settings["ExecStart"].startswith("/usr/local/bin/probe ")  # where scripts/install-service links it
    assert "/usr/local/bin/probe" in (ROOT / "scripts" / "install-service").read_text()
    dropin = (DEPLOY / "systemd" / "probe-diagnostics.conf").read_text()
    assert "CapabilityBoundingSet=CAP_NET_RAW" in dropin


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "probe.service"
    unit.write_text((DEPLOY / "systemd" / "probe.service").read_text().replace("/usr/local/bin/probe", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_panels_do_not_overlap() -> None:
    """Explicit grid positions (rows appended below the panels built before them) leave no two
    panels on the same cell, and none wider than the grid."""
    for name, data in dashboards().items():
        taken: dict[tuple[int, int], str] = {}
        for panel in data["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24, (name, panel["title"])
            for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
                assert cell not in taken, (name, panel["title"], taken[cell])
                taken[cell] = panel["title"]
