"""Scenario files: the loader's errors name file, line and key; the replay follows the timeline.

No root needed: the loader is given the host and technique names, and the replay
runs against a fake lab that records what was applied when.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from probe.core.config import ConfigError
from probe.lab import scenario
from probe.lab.scenario import Expectation, load, load_text, observe, replay

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
HOSTS = ["a.test", "b.test", "c.test"]


def ip_drop(lab: Any, handle: Any, host: str | None = None, addresses: list[str] | None = None,
            subnet: str | None = None) -> None:
    """Stands in for a lab technique: the loader checks parameters against this signature."""


def throttle_sni(lab: Any, handle: Any, names: list[str], rate_kbit: float = 128.0) -> None:
    """As above, with a required parameter."""


TECHNIQUES: dict[str, Any] = {"ip_drop": ip_drop, "throttle_sni": throttle_sni, "server_down": None}

GOOD = """\
scenario: demo
title: A demo incident
sources: [000.txt]
targets: [a.test, b.test, c.test]
phases:
  - name: before
    onset: 0
    lift: 10
    expect: {a.test: false, b.test: false, c.test: false}
  - name: ban
    onset: 10
    lift: 30
    when: day 1
    techniques:
      - technique: ip_drop
        params: {addresses: [198.18.10.10]}
        aims: [a.test]
      - {technique: throttle_sni, params: {names: [b.test], rate_kbit: 130}}
    expect:
      a.test: {blocking: tcp_ip, accessible: false, failure: generic_timeout_error}
      b.test: throttling
      c.test: {blocking: false, rule: accessible}
  - name: lifted
    onset: 30
    lift: 40
    techniques: [server_down]
    expect: {a.test: false, b.test: false, c.test: null}
"""


def parse(text: str) -> scenario.Scenario:
    return load_text(text, "s.yaml", hosts=HOSTS, techniques=TECHNIQUES)


def test_good_file() -> None:
    s = parse(GOOD)
    assert s.name == "demo" and s.targets == ("a.test", "b.test", "c.test") and s.duration == 40
    before, ban, lifted = s.phases
    assert before.techniques == () and before.expect["a.test"] == Expectation(False, line=9)
    drop, throttle = ban.techniques
    assert drop.technique == "ip_drop" and drop.params == {"addresses": ("198.18.10.10",)}
    assert drop.aims == ("a.test",) and drop.line == 15
    assert throttle.params == {"names": ("b.test",), "rate_kbit": 130}
    a = ban.expect["a.test"]
    assert (a.blocking, a.accessible, a.check_accessible, a.failure) == ("tcp_ip", False, True, "generic_timeout_error")
    assert ban.expect["b.test"].blocking == "throttling" and not ban.expect["b.test"].check_accessible
    assert ban.expect["c.test"].rule == "accessible" and ban.when == "day 1"
    assert lifted.techniques[0].technique == "server_down" and lifted.expect["c.test"].blocking is None


def _replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_replace("title: A demo incident\n", "title: A demo incident\ncolour: red\n"),
         "s.yaml:3: colour: unknown key 'colour'"),
        (_replace("targets: [a.test, b.test, c.test]", "targets: [a.test, b.test, x.test]"),
         "s.yaml:4: targets[2]: 'x.test' is not a lab host"),
        (_replace("targets: [a.test, b.test, c.test]", "targets: [a.test, b.test, a.test]"),
         "s.yaml:4: targets[2]: duplicate target 'a.test'"),
        (_replace("      - technique: ip_drop\n", "      - technique: ip_dorp\n"),
         "s.yaml:15: phases[1] (ban).techniques[0].technique: unknown technique 'ip_dorp' (the lab has: "
         "ip_drop, server_down, throttle_sni)"),
        (_replace("params: {addresses: [198.18.10.10]}", "params: {adresses: [198.18.10.10]}"),
         "s.yaml:16: phases[1] (ban).techniques[0].params.adresses: unknown parameter 'adresses' for ip_drop "
         "(known: host, addresses, subnet)"),
        (_replace("params: {addresses: [198.18.10.10]}", "params: {host: z.test}"),
         "s.yaml:16: phases[1] (ban).techniques[0].params.host: 'z.test' is not a lab host"),
        (_replace("phases:\n", "target_options:\n  a.test: {ports: [443, 0]}\nphases:\n"),
         "s.yaml:6: target_options.a.test.ports[1]: 0 is not a port (1-65535)"),
        (_replace("phases:\n", "target_options:\n  a.test: {name: other}\nphases:\n"),
         "s.yaml:6: target_options.a.test.name: unknown key 'name'"),
        (_replace("phases:\n", "target_options:\n  q.test: {ports: [80]}\nphases:\n"),
         "s.yaml:6: target_options.q.test: 'q.test' is not one of this scenario's targets"),
        (_replace("phases:\n", "probe_settings:\n  timeouts: {connect: -1}\nphases:\n"),
         "s.yaml:6: probe_settings.timeouts.connect: -1 is out of range"),
        (_replace("params: {names: [b.test], rate_kbit: 130}", "params: {rate_kbit: 130}"),
         "s.yaml:18: phases[1] (ban).techniques[1].params: throttle_sni needs 'names'"),
        (_replace("aims: [a.test]", "aims: [z.test]"),
         "s.yaml:17: phases[1] (ban).techniques[0].aims[0]: 'z.test' is not one of this scenario's targets"),
        (_replace("      b.test: throttling\n", "      b.test: throttled\n"),
         "s.yaml:21: phases[1] (ban).expect.b.test: 'throttled' is not a blocking value (one of: false, dns, "
         "tcp_ip, tls, http-failure, http-diff, origin-withheld, quic, throttling, null)"),
        (_replace("      b.test: throttling\n", "      b.test: true\n"),
         "s.yaml:21: phases[1] (ban).expect.b.test: True is not a blocking value"),
        (_replace("      b.test: throttling\n", ""),
         "s.yaml:19: phases[1] (ban).expect: no expectation for b.test"),
        (_replace("      b.test: throttling\n", "      b.test: throttling\n      d.test: false\n"),
         "s.yaml:22: phases[1] (ban).expect.d.test: unknown target 'd.test'"),
        (_replace("accessible: false, failure", "accessible: maybe, failure"),
         "s.yaml:20: phases[1] (ban).expect.a.test.accessible: 'maybe' is not true or false"),
        (_replace("{blocking: false, rule: accessible}", "{rule: accessible}"),
         "s.yaml:22: phases[1] (ban).expect.c.test: missing required key 'blocking'"),
        (_replace("    onset: 10\n    lift: 30\n", "    onset: 10\n    lift: 5\n"),
         "s.yaml:12: phases[1] (ban).lift: 5 is not after the onset 10"),
        (_replace("    onset: 10\n    lift: 30\n", "    onset: 8\n    lift: 30\n"),
         "s.yaml:10: phases[1] (ban).onset: 8 is before the lift 10 of the phase before"),
        (_replace("    onset: 10\n    lift: 30\n", "    onset: ten\n    lift: 30\n"),
         "s.yaml:11: phases[1].onset: 'ten' is not a number"),
        (_replace("  - name: lifted\n", "  - name: ban\n"),
         "s.yaml:23: phases[2].name: duplicate phase name 'ban' (first: phases[1])"),
        (_replace("    lift: 10\n", ""), "s.yaml:6: phases[0] (before): missing required key 'lift'"),
        (_replace("{technique: throttle_sni, params: {names: [b.test], rate_kbit: 130}}",
                  "{technique: ip_drop, params: {addresses: [198.18.10.10]}}"),
         "s.yaml:18: phases[1] (ban).techniques[1]: the same technique as techniques[0]"),
        (_replace("    techniques: [server_down]\n", "    techniques: server_down\n"),
         "s.yaml:26: phases[2] (lifted).techniques: 'server_down' is not a list"),
        ("scenario: x\ntitle: y\ntargets: [a.test]\nphases: []\n", "s.yaml:4: phases: must be a non-empty list"),
        ("scenario: x\ntargets: [a.test]\nphases: []\n", "s.yaml:1: title: missing required key 'title'"),
        ("scenario: x\n  title: [\n", "s.yaml:2: invalid YAML"),
        ("", "s.yaml: the file is empty"),
    ],
)
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value), str(info.value)


def test_load_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD)
    assert load(path, hosts=HOSTS, techniques=TECHNIQUES).path == str(path)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load(tmp_path / "missing.yaml", hosts=HOSTS, techniques=TECHNIQUES)


@pytest.mark.parametrize("path", sorted(SEEDS.glob("*.yaml")), ids=lambda p: p.stem)
def test_seeds_load_against_the_real_lab(path: Path) -> None:
    """Every seed names real lab hosts, real techniques and their real parameters."""
    s = load(path)
    assert s.name == path.stem and s.sources
    assert s.duration <= 120, "a seed replays in about two minutes at speed 1"
    assert all(p.expect.keys() == set(s.targets) for p in s.phases)


def test_there_are_four_seeds() -> None:
    assert {p.stem for p in SEEDS.glob("*.yaml")} >= {
        "telegram-2018-ban", "vpn-crackdown-payments", "moscow-throttling-channels", "twitter-2021-sni-throttling",
    }


# -- the replay against a fake lab ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def _accessible(blocking: Any) -> bool | None:
    return None if blocking is None else blocking in (False, "throttling")


class FakeLab:
    """Decides verdicts from the techniques in force: ip_drop blocks a.test, throttle_sni b.test."""

    def __init__(self, clock: FakeClock, fail_on: str | None = None) -> None:
        self.clock, self.fail_on = clock, fail_on
        self.fail_on_remove: str | None = None
        self.active: dict[int, str] = {}
        self.log: list[tuple[float, str, str]] = []
        self.next = 0

    def apply(self, technique: str, **params: Any) -> int:
        assert not any(isinstance(v, tuple) for v in params.values()), "the lab gets lists"
        if technique == self.fail_on:
            raise RuntimeError("iptables said no")
        self.next += 1
        self.active[self.next] = technique
        self.log.append((self.clock.now, "apply", technique))
        return self.next

    def remove(self, handle: int) -> None:
        if self.active[handle] == self.fail_on_remove:
            self.active.pop(handle)
            raise RuntimeError("tc said no")
        self.log.append((self.clock.now, "remove", self.active.pop(handle)))

    def targets_yaml(self, names: list[str], overrides: dict[str, dict[str, Any]] | None = None,
                     settings: dict[str, Any] | None = None) -> str:
        self.asked = (names, overrides, settings)
        return "targets: " + ",".join(names)

    def run_probe(self, targets_yaml: str, only: list[str] | None = None, timeout: float = 60) -> list[
            dict[str, Any]]:
        self.clock.now += 2.0  # measuring takes time
        on = set(self.active.values())
        blocking: dict[str, Any] = {
            "a.test": "tcp_ip" if "ip_drop" in on else False,
            "b.test": "throttling" if "throttle_sni" in on else False,
            "c.test": None if "server_down" in on else False,
        }
        failure = {"a.test": "generic_timeout_error" if "ip_drop" in on else None}
        return [{"record_type": "check", "target": "a.test"}] + [
            {"record_type": "verdict", "target": t, "failure": failure.get(t),
             "test_keys": {"blocking": b, "accessible": _accessible(b),
                           "rule": "accessible" if b is False else "x", "reason": "because"}}
            for t, b in blocking.items()
        ]


def test_replay_follows_the_timeline() -> None:
    text = _replace("phases:\n", "target_options:\n  b.test: {checks: [dns, tcp, tls, throughput]}\n"
                    "probe_settings: {throughput_max_seconds: 6}\nphases:\n")
    clock = FakeClock()
    lab = FakeLab(clock)
    out = io.StringIO()
    report = replay(parse(text), lab, speed=2.0, out=out, settle=0.5, clock=clock, sleep=clock.sleep)
    assert report.passed, report.mismatches()
    # Speed 2: onsets 10 and 30 come at 5 s and 15 s; each probe run takes 2 s after 0.5 s of settling.
    assert lab.log == [
        (105.0, "apply", "ip_drop"), (105.0, "apply", "throttle_sni"),
        (115.0, "remove", "ip_drop"), (115.0, "remove", "throttle_sni"), (115.0, "apply", "server_down"),
        (120.0, "remove", "server_down"),
    ]
    assert [round(p.started, 1) for p in report.phases] == [0.5, 5.5, 15.5]
    assert lab.asked == (["a.test", "b.test", "c.test"], {"b.test": {"checks": ["dns", "tcp", "tls", "throughput"]}},
                         {"throughput_max_seconds": 6})
    table = out.getvalue()
    assert "PASS: 9/9 verdicts as expected in 3 phases" in table
    assert re.search(r"\nban +5\.5 +a\.test +aimed +tcp_ip +tcp_ip +generic_timeout_error +x +yes\n", table), table
    assert re.search(r"\nban +5\.5 +b\.test +collateral +throttling ", table), table  # no aims: collateral
    assert "  ban [day 1]: ip_drop(addresses=198.18.10.10), throttle_sni(names=b.test, rate_kbit=130); probe 2.0 s" \
        in table


def test_replay_carries_a_technique_over_touching_phases() -> None:
    text = GOOD.replace("    techniques: [server_down]\n",
                        "    techniques: [{technique: ip_drop, params: {addresses: [198.18.10.10]}}]\n")
    text = text.replace("expect: {a.test: false, b.test: false, c.test: null}",
                        "expect: {a.test: tcp_ip, b.test: false, c.test: false}")
    clock = FakeClock()
    lab = FakeLab(clock)
    report = replay(parse(text), lab, speed=10.0, out=io.StringIO(), settle=0, clock=clock, sleep=clock.sleep)
    assert report.passed, report.mismatches()
    assert [entry[1:] for entry in lab.log] == [
        ("apply", "ip_drop"), ("apply", "throttle_sni"), ("remove", "throttle_sni"), ("remove", "ip_drop"),
    ]


def test_replay_reports_mismatches_without_weakening_them() -> None:
    text = _replace("      b.test: throttling\n", "      b.test: tls\n")
    clock = FakeClock()
    out = io.StringIO()
    report = replay(parse(text), FakeLab(clock), speed=100.0, out=out, settle=0, clock=clock, sleep=clock.sleep)
    assert not report.passed
    assert report.mismatches() == ["ban/b.test: blocking throttling != tls (x: because)"]
    assert "FAIL: 8/9 verdicts as expected" in out.getvalue() and " NO" in out.getvalue()


def test_replay_removes_everything_when_a_technique_fails() -> None:
    clock = FakeClock()
    lab = FakeLab(clock, fail_on="throttle_sni")
    report = replay(parse(GOOD), lab, speed=100.0, out=io.StringIO(), settle=0, clock=clock, sleep=clock.sleep)
    assert not report.passed and len(report.phases) == 2
    assert report.phases[1].error == "applying throttle_sni: iptables said no"
    assert lab.active == {}


def test_observe_without_a_verdict() -> None:
    phase = parse(GOOD).phases[0]
    observed = observe(phase, [])
    assert [o.ok for o in observed] == [False, False, False]
    assert observed[0].mismatch() == "no verdict"


def test_replay_removes_the_others_when_one_removal_fails() -> None:
    clock = FakeClock()
    lab = FakeLab(clock)
    lab.fail_on_remove = "ip_drop"
    with pytest.raises(RuntimeError, match="tc said no"):
        replay(parse(GOOD), lab, speed=100.0, out=io.StringIO(), settle=0, clock=clock, sleep=clock.sleep)
    assert lab.active == {}
    assert ("remove", "throttle_sni") in [entry[1:] for entry in lab.log]
