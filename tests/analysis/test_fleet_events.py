"""Fleet events, pure: blocking seen by enough probes of a network is one event with bounded start and
end; one probe offline, an ASN's outage and a worldwide outage are none; a partial rollout has its share."""

from __future__ import annotations

import math
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
          service_down: tuple[float, float] | None = None, noisy: dict[str, float] | None = None,
          ) -> list[Observation]:
    """Observations of probes p<asn>-<k>; ``blocked``, ``down`` and ``noisy`` (a probe's own failure rate)
    are keyed by probe id (or by ASN)."""
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
                elif rng.random() < next((r for key, r in (noisy or {}).items() if key in (pid, asn)), noise):
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


def _one_ended(obs: list[Observation], asn: str) -> tuple[float, float, float]:
    """(start_time, end_time, closed at) of the one ASN-scope event found."""
    found = [e for e in detect(obs, PARAMS) if e.scope == "asn"]
    assert [e.network for e in found] == [asn], found  # one event: not split, nothing elsewhere
    e = found[0]
    assert e.end_time is not None, "still open"
    return e.start_time, e.end_time, e.updated_at


@pytest.mark.parametrize("seed", [14, 16])
def test_probes_never_blocked_do_not_pull_the_end_of_a_partial_rollout(seed: int) -> None:
    """A probe's one failure used to count twice (once in its ASN's series, once in its country's), so
    probes that were never blocked joined the event on one noisy failure, and their ok points placed the
    end far too early (seed 7 of the bench: 2.9 intervals; here tens of intervals)."""
    onset, lift = T0 + 30.5 * I, T0 + 110.3 * I
    blocked = {f"pAS1-{k}": (onset, lift, "tcp_ip") for k in range(4)}  # one city: 4 of the ASN's 10
    obs = fleet(150, {("AA", "AS2"): 10, ("AA", "AS1"): 10}, blocked=blocked, seed=seed, noise=0.05)
    start, end, _ = _one_ended(obs, "AS1")
    assert abs(start - onset) <= I and abs(end - lift) <= I


@pytest.mark.parametrize("seed", [1, 3])
def test_a_small_network_lift_is_not_taken_for_noise_by_the_country(seed: int) -> None:
    """While a 3-probe ASN's event is open, its country's series (which does not fire: 3 probes of 63)
    used to learn the blocked measurements as the probes' noise, so the lift took 14-16 intervals to
    be seen instead of about 4."""
    onset, lift = T0 + 40.4 * I, T0 + 100.7 * I
    obs = fleet(160, {("AA", "AS1"): 3, ("AA", "AS2"): 60}, blocked={"AS1": (onset, lift, "tcp_ip")}, seed=seed)
    start, end, closed = _one_ended(obs, "AS1")
    assert abs(start - onset) <= I and abs(end - lift) <= I
    assert closed - lift <= 8 * I


@pytest.mark.parametrize("seed", [1, 18])
def test_a_noisy_probe_neither_holds_the_event_open_nor_moves_its_end(seed: int) -> None:
    """One of the three probes fails 25 % of the time: its failures after the lift weigh at its own noise."""
    onset, lift = T0 + 40.4 * I, T0 + 100.7 * I
    obs = fleet(150, {("AA", "AS2"): 30, ("AA", "AS1"): 3}, blocked={"AS1": (onset, lift, "tcp_ip")},
                seed=seed, noisy={"pAS1-0": 0.25})
    start, end, closed = _one_ended(obs, "AS1")
    assert abs(start - onset) <= I and abs(end - lift) <= I
    assert closed - lift <= 10 * I


def test_advance_before_any_observation_closes_nothing() -> None:
    detector = FleetDetector()
    assert detector.newest == -math.inf
    assert detector.advance(detector.newest) == [] and detector.advance(math.nan) == []
