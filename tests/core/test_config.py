"""The targets loader: defaults, and errors that name file, line, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.core.config import DEFAULT_TARGETS, ConfigError, load, load_text, parse_resolver

GOOD = """
settings:
  resolvers: [system, udp://198.18.0.53, tcp://198.18.0.53:5353, tls://198.18.0.54, https://198.18.0.55/q]
  control_resolver: https://198.18.0.55/dns-query
targets:
  - name: tg
    service: telegram
    category: messaging
    host: T.ME.
    urls: [https://t.me/s/durov]
  - name: dc2
    service: telegram
    category: messaging
    addresses: [149.154.167.51]
    ports: [80, 443]
  - {name: ctl, service: control, category: control, host: www.example.com}
"""


def test_defaults_and_normalisation() -> None:
    cfg = load_text(GOOD, "t.yaml")
    tg, dc2, ctl = cfg.targets
    assert tg.host == "t.me" and tg.checks == ("dns", "tcp", "tls", "http") and tg.ports == (443,)
    assert dc2.checks == ("tcp",) and dc2.server_name is None
    assert ctl.control and not tg.control
    assert [r.scheme for r in cfg.settings.resolvers] == ["system", "udp", "tcp", "tls", "https"]
    assert cfg.settings.resolvers[2].port == 5353 and cfg.settings.resolvers[3].port == 853
    assert cfg.settings.control_resolver is not None and cfg.settings.control_resolver.path == "/dns-query"
    assert tg.line == 6


def test_retest_settings() -> None:
    defaults = load_text(GOOD, "t.yaml").settings
    assert (defaults.retests, defaults.retest_spacing) == (4, 15.0)
    one = "targets:\n  - {name: a, service: s, category: c, host: a.test}\n"
    off = load_text("settings: {retests: 0, interval: 10}\n" + one, "t.yaml").settings
    assert off.retests == 0
    # the defaults adapt to a short interval (the daemon runs the re-tests that fit); explicit values must fit
    assert load_text("settings: {interval: 30}\n" + one, "t.yaml").settings.retests == 4
    assert load_text("settings: {interval: 30, retests: 2, retest_spacing: 10}\n" + one, "t.yaml").settings.retests == 2
    assert defaults.adaptive_interval is True
    assert load_text("settings: {adaptive_interval: false}\n" + one, "t.yaml").settings.adaptive_interval is False


def test_select_keeps_controls() -> None:
    cfg = load_text(GOOD, "t.yaml").select(["tg"])
    assert [t.name for t in cfg.targets] == ["tg", "ctl"]
    with pytest.raises(ConfigError, match="unknown target"):
        load_text(GOOD, "t.yaml").select(["nope"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets:\n  - {name: a, service: s, category: c, host: a.test, bogus: 1}\n",
         "t.yaml:2: targets[0].bogus: unknown key 'bogus'"),
        ("targets:\n  - name: a\n    service: s\n    category: c\n    host: a.test\n    ports: [443, 70000]\n",
         "t.yaml:6: targets[0].ports[1]: 70000 is not a port"),
        ("targets:\n  - {name: a, service: s, category: c, addresses: [1.2.3.999]}\n",
         "targets[0].addresses[0]: '1.2.3.999' is not an IP address"),
        ("targets:\n  - {name: a, service: s, category: c}\n", "needs a 'host' or 'addresses'"),
        ("targets:\n  - {name: a, service: s, host: a.test}\n", "missing required key 'category'"),
        ("targets:\n  - {name: a, service: s, category: c, host: a.test, checks: [dns, ping]}\n",
         "unknown check 'ping'"),
        ("targets:\n  - {name: a, service: s, category: c, addresses: [198.18.0.1], checks: [dns]}\n",
         "need a 'host'"),
        ("targets:\n  - {name: a, service: s, category: c, host: a.test}\n  - {name: a, service: s, category: c, "
         "host: b.test}\n", "t.yaml:3: targets (a): duplicate name 'a' (first at line 2)"),
        ("settings:\n  control_resolver: udp://198.18.0.1\ntargets: []\n",
         "t.yaml:2: settings.control_resolver: 'udp://198.18.0.1': the control resolver must be encrypted"),
        ("settings:\n  resolvers: [quic://x]\ntargets: []\n", "resolver scheme must be one of"),
        ("settings:\n  timeouts: {dns: -1}\ntargets: []\n", "settings.timeouts.dns: -1 is out of range"),
        ("settings:\n  concurrency: many\ntargets: []\n", "settings.concurrency: 'many' is not an integer"),
        ("settings:\n  ca_bundle: /nonexistent/ca.pem\ntargets:\n  - {name: a, service: s, category: c, "
         "host: a.test}\n", "settings.ca_bundle: '/nonexistent/ca.pem' is not a readable file"),
        ("settings:\n  retests: -1\ntargets: []\n", "t.yaml:2: settings.retests: -1 is out of range [0, 20]"),
        ("settings:\n  retests: 2.5\ntargets: []\n", "settings.retests: 2.5 is not an integer"),
        ("settings:\n  retest_spacing: 0\ntargets: []\n", "settings.retest_spacing: 0 is out of range"),
        ("settings:\n  adaptive_interval: sometimes\ntargets: []\n", "settings.adaptive_interval: 'sometimes'"),
        ("settings:\n  interval: 60\n  retests: 5\n  retest_spacing: 15\ntargets: []\n",
         "t.yaml:4: settings.retest_spacing: 5 re-tests 15 s apart (75 s) do not fit in the 60 s interval"),
        ("settings:\n  interval: 30\n  retests: 3\ntargets: []\n",
         "t.yaml:3: settings.retests: 3 re-tests 15 s apart (45 s) do not fit in the 30 s interval"),
        ("targets: []\n", "targets: must be a non-empty list"),
        ("settings: {}\n", "missing 'targets' list"),
        ("targets:\n  - [unclosed\n", "invalid YAML"),
        ("", "the file is empty"),
        ("targets:\n  - {name: a, service: s, category: c, host: 'not a host!'}\n", "is not a host name"),
        ("targets:\n  - {name: a, service: s, category: c, host: a.test, urls: [ftp://a.test/]}\n",
         "is not an http:// or https:// URL"),
    ],
)
def test_errors_name_the_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "t.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("t.yaml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(bad)


def test_relative_ca_bundle_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "t.yaml").write_text("settings: {ca_bundle: ca.pem}\ntargets:\n  - {name: a, service: s, "
                                     "category: c, host: a.test}\n")
    assert load(tmp_path / "t.yaml").settings.ca_bundle == str(tmp_path / "ca.pem")


def test_bundled_default_targets_are_valid_and_cover_the_brief() -> None:
    cfg = load(DEFAULT_TARGETS)
    names = {t.name for t in cfg.targets}
    addresses = {a for t in cfg.targets for a in t.addresses}
    hosts = {t.host for t in cfg.targets}
    assert {"149.154.175.50", "149.154.167.51", "149.154.175.100", "149.154.167.91", "149.154.171.5",
            "95.161.76.100"} <= addresses
    assert {f"e{i}.whatsapp.net" for i in range(1, 17)} <= hosts
    assert {"chat.signal.org", "cdsi.signal.org", "storage.signal.org", "sfu.voip.signal.org"} <= hosts
    assert {t.category for t in cfg.targets} >= {"messaging", "cloud", "payment", "control"}
    assert sum(t.control for t in cfg.targets) >= 2 and len(names) == len(cfg.targets)
    assert cfg.settings.control_resolver is not None and cfg.settings.control_resolver.encrypted


def test_parse_resolver_bad_port() -> None:
    with pytest.raises(ValueError, match="bad port"):
        parse_resolver("udp://198.18.0.1:99999")
