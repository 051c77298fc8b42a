"""A new volunteer's first minutes: consent on a real terminal, ``probe init``, the XDG configuration,
logs for people, and the status view-model (no browser: tests/service/test_status_browser.py has one).

Every test gets its own HOME / XDG_CONFIG_HOME / XDG_DATA_HOME and no pre-given consent, so the real
user's configuration is never read or written.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from probe.analysis.verdict import Controls
from probe.core.config import load, load_text
from probe.core.records import Event
from probe.service import daemon as daemon_mod
from probe.service import status
from tests.service.test_daemon import fake_measure, make_daemon, targets_yaml

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("targets:\n  - {name: closed, service: svc, category: messaging, addresses: [127.0.0.1], "
            "ports: [9], checks: [tcp]}\n")


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """The environment of a volunteer who has not consented yet, in a fresh home."""
    env = {k: v for k, v in os.environ.items() if k != "PROBE_INFORMED_CONSENT"}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(ROOT), TERM="dumb", COLUMNS="200")
    return env


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "probe", *args], cwd=str(ROOT), env=env, encoding="utf-8",
                         timeout=30, dimensions=(50, 200))


@pytest.mark.parametrize("command", [["run", "--once", "--no-store"], ["daemon", "--no-store", "--listen",
                                                                       "127.0.0.1:0"]])
def test_without_consent_and_without_a_terminal_it_exits_2_at_once_saying_how(
        home: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text(LOOPBACK)
    start = time.monotonic()
    done = probe(home, *command, "--targets", str(targets))
    assert done.returncode == 2 and time.monotonic() - start < 30
    assert "--i-consent" in done.stderr and "PROBE_INFORMED_CONSENT=1" in done.stderr
    assert "informed_consent: true" in done.stderr


def test_each_non_interactive_consent_is_accepted(home: dict[str, str], tmp_path: Path) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text(LOOPBACK)
    assert probe(home, "run", "--once", "--no-store", "--json", "--targets", str(targets),
                 "--i-consent").returncode == 0
    assert probe({**home, "PROBE_INFORMED_CONSENT": "1"}, "run", "--once", "--no-store", "--targets",
                 str(targets)).returncode == 0
    targets.write_text("settings: {informed_consent: true}\n" + LOOPBACK)
    assert probe(home, "run", "--once", "--no-store", "--targets", str(targets)).returncode == 0
    assert not (Path(home["XDG_CONFIG_HOME"]) / "probe" / "consent").exists()  # flags do not record it


def test_consent_on_a_terminal_refused_then_given_once(home: dict[str, str], tmp_path: Path) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text(LOOPBACK)
    child = spawn(home, "run", "--once", "--no-store", "--targets", str(targets))
    child.expect("Before you measure")
    child.expect("never stores or uploads: your IP address")
    child.expect("To consent, type")
    child.sendline("no")
    child.expect("nothing was measured")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    child = spawn(home, "run", "--once", "--no-store", "--targets", str(targets))
    child.expect("To consent, type")
    child.sendline("I agree")
    child.expect("Recorded in")
    child.expect("closed")  # the verdict table
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (Path(home["XDG_CONFIG_HOME"]) / "probe" / "consent").read_text().startswith("1 ")
    again = probe(home, "run", "--once", "--no-store", "--json", "--targets", str(targets))  # no terminal now
    assert again.returncode == 0, again.stderr


def test_probe_init_asks_writes_the_xdg_configuration_and_every_command_finds_it(home: dict[str, str]) -> None:
    child = spawn(home, "init")
    child.expect("Before you measure")
    child.sendline("I agree")
    child.expect(r"Your country")
    child.sendline("ru")
    child.expect(r"ASN")
    child.sendline("12389")
    child.expect(r"Upload measurements")
    child.sendline("no")
    child.expect("Wrote")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    path = Path(home["XDG_CONFIG_HOME"]) / "probe" / "targets.yaml"
    cfg = load(path)
    assert (cfg.settings.probe_cc, cfg.settings.probe_asn) == ("RU", "AS12389")
    assert cfg.settings.store == str(Path(home["XDG_DATA_HOME"]) / "probe" / "probe.sqlite")
    assert len(cfg.targets) == len(load(None).targets)  # the default targets, copied
    listed = probe(home, "targets", "list")
    assert listed.returncode == 0 and f"targets file in use: {path} (written by probe init)" in listed.stdout
    shown = probe(home, "show")  # finds the store named by the user's file (none yet: says where it looked)
    assert shown.returncode == 1 and str(Path(home["XDG_DATA_HOME"]) / "probe" / "probe.sqlite") in shown.stderr
    assert probe(home, "init", "--i-consent").returncode == 1  # never overwrites without --force


def test_probe_init_with_flags_needs_no_terminal_and_checks_its_values(home: dict[str, str]) -> None:
    bad = probe(home, "init", "--i-consent", "--country", "Russia", "--asn", "AS1")
    assert bad.returncode == 2 and "two letters" in bad.stderr
    done = probe(home, "init", "--i-consent", "--country", "ir", "--asn", "AS58224", "--upload")
    assert done.returncode == 0, done.stderr
    assert "probe enrol URL TOKEN" in done.stdout
    text = (Path(home["XDG_CONFIG_HOME"]) / "probe" / "targets.yaml").read_text()
    assert "upload: {enabled: true}" in text
    assert "probe_cc: IR" in text and "probe_asn: AS58224" in text and "Controls:" in text  # comments kept
    assert probe(home, "init").returncode == 1
    assert probe(home, "targets", "list", "--help").returncode == 0
    without = {k: v for k, v in home.items() if k not in ("XDG_CONFIG_HOME",)}
    listed = probe(without, "targets", "list")  # ~/.config under the fresh HOME: nothing there
    assert "bundled with the package" in listed.stdout


# -- Logs for people -----------------------------------------------------------------------------


def test_text_logs_on_a_terminal_json_otherwise_and_a_line_when_the_connection_is_down() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    text, plain = Tty(), io.StringIO()
    daemon_mod.setup_logging(stream=text, fmt="auto")
    logging.getLogger("probe.service.daemon").warning("store write failed", extra={"fields": {"target": "a"}})
    daemon_mod.setup_logging(stream=plain, fmt="auto")
    logging.getLogger("probe.service.daemon").warning("store write failed", extra={"fields": {"target": "a"}})
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning store write failed  target=a\n", text.getvalue())
    assert plain.getvalue().startswith('{"ts": ') and '"msg": "store write failed", "target": "a"' in plain.getvalue()

    import asyncio

    d = make_daemon(targets_yaml(["a"], control=True).replace("checks: [tcp]}", "checks: [tcp], "
                                                                "options: {fake: blocked}}", 1))
    control = next(t for t in d.config.targets if t.control)
    lines = io.StringIO()
    daemon_mod.setup_logging(stream=lines, fmt="text")
    try:
        outcome = asyncio.run(fake_measure(control, d.ctx, Controls(network_ok=None)))
        d._handle(outcome)
        d._handle(outcome)  # said once, not at every run
    finally:
        daemon_mod.setup_logging(logging.WARNING, sys.stderr)
    assert lines.getvalue().count("your connection seems down: every control target failed") == 1


# -- The view-model: each service's state in words ---------------------------------------------------


def verdict(target: str, blocking: Any, accessible: Any, t: float, reason: str = "r") -> dict[str, Any]:
    return {"record_type": "verdict", "target": target, "service": "svc", "category": "messaging",
            "measurement_start_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)),
            "test_keys": {"blocking": blocking, "accessible": accessible, "reason": reason}}


def test_view_model_says_each_state_in_words_from_the_latest_verdict() -> None:
    now = 1_800_000_000.0
    rate = [{"target": "slow", "role": role, "measurement_start_time": time.strftime("%Y-%m-%d %H:%M:%S",
             time.gmtime(now - 60)), "test_keys": {"rate_bytes_per_second": r}}
            for role, r in (("target", 16_000.0), ("control", 1_250_000.0))]
    records = [verdict("up", "tcp_ip", False, now - 600), verdict("up", False, True, now - 60),
               verdict("dns", "dns", False, now - 60, "resolver said NXDOMAIN for 10.1.2.3"),
               verdict("slow", "throttling", True, now - 60), verdict("gone", None, None, now - 60),
               verdict("down", False, False, now - 60)]
    event = Event("e1", "p", "dns", "svc", "dns", "dns", now - 500, now - 560, now - 500, None, None, None, 1.0)
    view = status.build_view(records, rate, [event], status.Health(now - 60, status.upload_status(), 2048),
                             now=now, since=now - 3600)
    words = {row.target: status.state_words(row) for row in view.rows}
    assert words == {"dns": "blocked (dns)", "slow": "throttled: 128 kbit/s vs 10.0 Mbit/s control",
                     "gone": "outage", "down": "not reachable", "up": "accessible"}
    assert [row.target for row in view.rows][:2] == ["dns", "slow"]  # blocked first, then throttled
    assert "10.1.2.3" not in next(r.reason for r in view.rows if r.target == "dns")
    page = status.render_html(view, csp_meta=True)
    assert "<script" not in page and "10.1.2.3" not in page and "ongoing" in page
    assert "<!DOCTYPE svg" not in page and "<metadata>" not in page and "<?xml" not in page
    fetched = re.findall(r"""(?:src|href|url\()\s*=?\s*["']?([a-z]+:)?//""", page)
    assert fetched == [], "something on the page would be fetched"
    assert load_text("settings: {informed_consent: true}\n" + LOOPBACK).settings.informed_consent
