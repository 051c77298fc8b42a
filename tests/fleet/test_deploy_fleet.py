"""deploy/ for the collector: the compose file and the systemd unit say what the code does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from probe.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_collector_compose_is_structurally_sound() -> None:
    compose = yaml.safe_load((DEPLOY / "collector" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "collector-1", "collector-2"}
    assert services["postgres"]["image"].endswith("postgres:15")
    parser = build_parser()
    for name in ("migrate", "collector-1", "collector-2"):
        s = services[name]
        assert (DEPLOY / "collector" / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        assert s["entrypoint"] == ["probe", "collector"] and s["cap_drop"] == ["ALL"]
        parser.parse_args(["collector", *s["command"], "--db", "postgresql://x@y/z"])  # the flags exist
        assert "PROBE_COLLECTOR_DB" in s["environment"]
        for port in s.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["collector-1"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in services["postgres"]


def test_collector_unit_is_sandboxed_and_migrates_first() -> None:
    text = (DEPLOY / "systemd" / "probe-collector.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["DynamicUser"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == "" and settings["NoNewPrivileges"] == "yes"
    assert settings["ExecStartPre"] == "/usr/local/bin/probe collector migrate"
    assert settings["ExecStart"].startswith("/usr/local/bin/probe collector serve --listen 127.0.0.1:")
    assert settings["EnvironmentFile"] == "/etc/probe/collector.env"  # the DSN's password stays out of argv
    build_parser().parse_args(settings["ExecStart"].split()[1:] + ["--db", "postgresql://x@y/z"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_collector_unit_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "probe-collector.service"
    text = (DEPLOY / "systemd" / "probe-collector.service").read_text().replace("/usr/local/bin/probe", "/bin/true")
    env = tmp_path / "collector.env"
    env.write_text("PROBE_COLLECTOR_DB=postgresql://x@y/z\n")
    unit.write_text(text.replace("/etc/probe/collector.env", str(env)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
