"""Fleet events, pure: blocking seen by enough probes of a network is one event with bounded start and
end; one probe offline, an ASN's outage and a worldwide outage are none; a partial rollout has its share."""

from __future__ import annotations

import random

import pytest

from probe.analysis.fleet_events import FleetDetector, FleetParams, Observation, detect, observation
from probe.fleet.localpg import sample_measurement

I = 300.0  # noqa: E741 - the interval
T0 = 1_780_000_000.0 - 1_780_000_000.0 % I
PARAMS = FleetParams(interval=I)


def fleet(n_bins: int, networks: dict[tuple[str, str], int], world: int = 0, *, seed: int = 1,
          blocked: dict[str, tuple[float, float | None, str]] | None = None,
          down: dict[str, tuple[float, float]] | None = None, noise: float = 0.01,
          service_down: tuple[float, float] | None = None) -> list[Observation]:
    """Observations of probes p<asn>-<k>; ``blocked`` and ``down`` are keyed by probe id (or by ASN)."""
    rng = random.Random(seed)
    nets = dict(networks)
    for k in range(world):  # probes in other countries, two ASNs each
        nets[(f"C{k}", f"AS{900 + 2 * k}")] = 3
        nets[(f"C{k}", f"AS{901 + 2 * k}")] = 3
    out: list[Observation] = []
    for (cc, asn), size in nets.items():
        for k in range(size):
            pid, phase = f"p{asn}-{k}", rng.uniform(0, I)
            for b in range(n_bins):
                t = T0 + b * I + phase
                off = next((w for key, w in (down or {}).items() if key in (pid, asn)), None)
                offline = off is not None and off[0] <= t < off[1]
                out.append(Observation(t, pid, cc, asn, "control", None if offline else False, control=True))
                blocking: object = False
                rule = next((r for key, r in (blocked or {}).items() if key in (pid, asn)), None)
                if offline:
                    blocking = "tcp_ip"  # no verdict row caught it: only the controls tell
                elif service_down and service_down[0] <= t < service_down[1]:
                    blocking = "tcp_ip"
                elif rule and rule[0] <= t and (rule[1] is None or t < rule[1]):
                    blocking = rule[2]
                elif rng.random() < noise:
                    blocking = "tcp_ip"
                out.append(Observation(t, pid, cc, asn, "messenger", blocking))
    return out


def test_a_ban_in_a_three_probe_asn_is_one_event_bounded_between_measurements() -> None:
    onset, lift = T0 + 40.4 * I, T0 + 80.7 * I
    obs = fleet(120, {("AA", "AS1"): 3, ("AA", "AS2"): 10}, blocked={"AS1": (onset, lift, "tcp_ip")})
    found = [e for e in detect(obs, PARAMS) if e.scope == "asn"]
    assert [(e.network, e.service, e.type) for e in found] == [("AS1", "messenger", "tcp_ip")]
    e = found[0]
    assert e.start_low <= onset <= e.start_high and e.start_high - e.start_low <= I
    assert e.end_low is not None and e.end_high is not None and e.end_low <= lift <= e.end_high
    assert abs(e.start_time - onset) <= I and e.end_time is not None and abs(e.end_time - lift) <= I
    assert e.cc == "AA" and e.asn == "AS1" and e.share == 1.0 and e.probes == 3


def test_two_probes_are_not_enough() -> None:
    obs = fleet(100, {("AA", "AS1"): 2}, blocked={"AS1": (T0 + 30 * I, None, "tcp_ip")})
    assert detect(obs, PARAMS) == []


def test_partial_rollout_is_reported_with_its_share() -> None:
    blocked = {f"pAS1-{k}": (T0 + 30.5 * I, None, "dns") for k in range(4)}
    found = [e for e in detect(fleet(80, {("AA", "AS1"): 10}, blocked=blocked), PARAMS) if e.scope == "asn"]
    assert len(found) == 1 and found[0].ongoing and found[0].type == "dns"
    assert found[0].probes == 4 and 0.35 <= found[0].share <= 0.45


@pytest.mark.parametrize("case", ["probe offline", "asn outage", "worldwide outage"])
def test_outages_are_not_censorship(case: str) -> None:
    nets = {("AA", "AS1"): 8, ("AA", "AS2"): 5}
    if case == "probe offline":
        obs = fleet(100, nets, down={"pAS1-0": (T0 + 30 * I, T0 + 60 * I)})
    elif case == "asn outage":
        obs = fleet(100, nets, down={"AS1": (T0 + 30 * I, T0 + 60 * I)})
    else:
        obs = fleet(100, nets, world=6, service_down=(T0 + 30 * I, T0 + 40 * I))
    assert detect(obs, PARAMS) == []


def test_without_controls_the_asn_outage_would_be_an_event() -> None:
    """The test above can fail: drop the controls and the same outage is found."""
    obs = [o for o in fleet(100, {("AA", "AS1"): 8}, down={"AS1": (T0 + 30 * I, T0 + 60 * I)}) if not o.control]
    assert [e.network for e in detect(obs, PARAMS) if e.scope == "asn"] == ["AS1"]


def test_a_ban_in_one_country_is_not_taken_for_a_worldwide_outage() -> None:
    obs = fleet(80, {("AA", "AS1"): 5}, world=6, blocked={"AS1": (T0 + 30.5 * I, None, "tcp_ip")})
    assert {(e.scope, e.network) for e in detect(obs, PARAMS)} == {("asn", "AS1"), ("cc", "AA")}


def test_noisy_probes_raise_nothing() -> None:
    obs = fleet(300, {("AA", "AS1"): 4, ("AA", "AS2"): 12}, noise=0.2, seed=3)
    assert detect(obs, PARAMS) == []


def test_incremental_feeding_gives_the_batch_answer_and_counts_late_data() -> None:
    obs = fleet(120, {("AA", "AS1"): 6}, blocked={"AS1": (T0 + 50.5 * I, T0 + 90.2 * I, "tls")})
    batch = detect(obs, PARAMS)
    det = FleetDetector(PARAMS)
    obs.sort(key=lambda o: o.time)
    for b in range(121):
        det.feed(o for o in obs if T0 + b * I <= o.time < T0 + (b + 1) * I)
        det.advance(T0 + (b + 1) * I + 2 * I + 1)
    det.flush()
    assert det.events() == batch and len(batch) == 2
    det.feed([Observation(T0 + 3 * I, "pAS1-0", "AA", "AS1", "messenger", "tls")])
    assert det.late == 1


def test_observation_from_an_ooni_measurement() -> None:
    m = sample_measurement("probe-a", T0, cc="IT", asn="AS30722", service="telegram")
    assert observation(m) is None  # no verdict in it
    m["test_keys"] = {**m["test_keys"], "blocking": "tcp_ip", "accessible": False, "category": "messaging",  # type: ignore[dict-item]
                      "service": "telegram"}
    o = observation(m)
    assert o is not None and (o.probe_id, o.cc, o.asn, o.service, o.blocking, o.control) == (
        "probe-a", "IT", "AS30722", "telegram", "tcp_ip", False)
    assert o.time == T0
    m["test_keys"]["category"] = "control"  # type: ignore[index]
    assert observation(m).control  # type: ignore[union-attr]
