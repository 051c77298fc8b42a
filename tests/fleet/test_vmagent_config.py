"""probe.fleet.vmagent: the files ``probe enrol`` writes for vmagent, the unit and the central compose."""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from probe.fleet.vmagent import CENTRAL_FAMILIES, asn_label, vmagent_config
from tests.synthetic_metrics import daemon_metrics, relabelled

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRICS_DOC = DEPLOY.parent / "docs" / "metrics.md"


def test_config_files_flags_and_secret(tmp_path: Path) -> None:
    files = vmagent_config(tmp_path / "vmagent", probe_id="de-berlin-7", cc="DE", asn="as3320",
                           remote_write_url="https://metrics.example.org/api/v1/write", username="fleet",
                           password="p@ss word", buffer_dir=tmp_path / "buffer")
    scrape = yaml.safe_load(files.scrape_config.read_text())
    job = scrape["scrape_configs"][0]
    assert job["job_name"] == "probe"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9810"], "labels": {"instance": "de-berlin-7"}}]
    assert scrape["global"] == {"scrape_interval": "30s", "scrape_timeout": "10s"}
    args = dict(a.split("=", 1) for a in files.args if not a.startswith("-remoteWrite.label="))
    labels = [a.split("=", 1)[1] for a in files.args if a.startswith("-remoteWrite.label=")]
    assert labels == ["probe=de-berlin-7", "cc=DE", "asn=AS3320"]
    assert args["-remoteWrite.tmpDataPath"] == str(tmp_path / "buffer")
    assert args["-remoteWrite.maxDiskUsagePerURL"] == "1GB"
    assert args["-httpListenAddr"].startswith("127.0.0.1:")
    assert files.password_file is not None and files.password_file.read_text() == "p@ss word"
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert "p@ss" not in " ".join(files.args) and "p@ss" not in files.env_file.read_text()
    # the environment file as systemd reads it: VMAGENT_ARGS="...", split on white space by $VMAGENT_ARGS
    value = re.search(r'^VMAGENT_ARGS="(.*)"$', files.env_file.read_text(), re.M)
    assert value and shlex.split(value.group(1)) == list(files.args)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"probe_id": "bad id"}, "probe id"),
    ({"cc": "de"}, "country"),
    ({"asn": "AS0"}, "AS number"),
    ({"asn": "cloud"}, "AS number"),
    ({"remote_write_url": "ftp://x"}, "http"),
    ({"username": "fleet"}, "both"),
    ({"buffer_dir": Path("/var/lib/my buffer")}, "white space"),
])
def test_bad_input_is_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"probe_id": "p1", "cc": "DE", "asn": 3320,
                               "remote_write_url": "https://m.example.org/api/v1/write", **kwargs}
    with pytest.raises(ValueError, match=message):
        vmagent_config(tmp_path, **args)  # type: ignore[arg-type]


def test_asn_label() -> None:
    assert asn_label(3320) == asn_label("3320") == asn_label("AS3320") == "AS3320"


@pytest.mark.skipif(shutil.which("vmagent") is None, reason="vmagent (Debian package victoria-metrics) not installed")
def test_vmagent_accepts_the_written_scrape_config(tmp_path: Path) -> None:
    files = vmagent_config(tmp_path, probe_id="p1", cc="DE", asn=3320, remote_write_url="http://127.0.0.1:1/api/v1/write")
    done = subprocess.run(["vmagent", f"-promscrape.config={files.scrape_config}", "-promscrape.config.dryRun",
                           "-loggerLevel=ERROR"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_vmagent_unit_is_sandboxed_and_reads_the_env_file() -> None:
    text = (DEPLOY / "vmagent" / "vmagent.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["EnvironmentFile"] == "/etc/probe/vmagent/vmagent.env"
    assert settings["ExecStart"] == "/usr/bin/vmagent $VMAGENT_ARGS"
    assert settings["StateDirectory"] == "probe-vmagent"  # the default buffer_dir
    assert settings["DynamicUser"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_vmagent_unit_verifies(tmp_path: Path) -> None:
    env = tmp_path / "vmagent.env"
    env.write_text('VMAGENT_ARGS="-version"\n')
    unit = tmp_path / "probe-vmagent.service"
    unit.write_text((DEPLOY / "vmagent" / "vmagent.service").read_text()
                    .replace("/etc/probe/vmagent/vmagent.env", str(env)).replace("/usr/bin/vmagent", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_central_compose_is_structurally_sound() -> None:
    compose = yaml.safe_load((DEPLOY / "metrics" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"victoriametrics", "vmalert", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / "metrics" / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "-rule=/etc/rules/*.rules.yml" in services["vmalert"]["command"]
    datasource = yaml.safe_load((DEPLOY / "metrics" / "grafana-datasource.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://victoriametrics:8428"


def test_only_the_fleet_series_are_sent_and_docs_say_how_many(tmp_path: Path) -> None:
    """The relabel file ``probe enrol`` writes, applied to the daemon's real rendering (default targets,
    upload on): the per-target families and histograms stay home; the figure in docs/metrics.md is this."""
    files = vmagent_config(tmp_path, probe_id="p1", cc="DE", asn=3320, remote_write_url="https://m.example.org/w")
    assert f"-remoteWrite.urlRelabelConfig={files.relabel_config}" in files.args
    rules = yaml.safe_load(files.relabel_config.read_text())
    sent = relabelled(daemon_metrics(upload=True), rules)
    names = {sample.name for sample in sent}
    assert names == set(CENTRAL_FAMILIES) - {"probe_event_active", "probe_event_start_timestamp_seconds"}
    assert not names & {"probe_blocking", "probe_reachable", "probe_scheduler_lag_seconds_bucket", "process_open_fds"}
    assert sum(sample.name == "probe_service_state" for sample in sent) == 14  # one per service
    with_events = relabelled(daemon_metrics(upload=True, events=3), rules)
    assert len(with_events) == len(sent) + 6  # an ongoing event: its two series go too
    match = re.search(r"default targets and the upload on sends (\d+) series", METRICS_DOC.read_text())
    assert match, "docs/metrics.md states the series a fleet probe sends centrally"
    assert int(match.group(1)) == len(sent)
