"""Accuracy of fleet-wide event detection on a simulated fleet with scripted truth (not a timed test).

A fleet of ``--probes`` probes (default 10,000) in >= 300 ASNs and >= 40 countries measures every
``INTERVAL`` for ``--days`` days, each probe at its own phase. The script, modelled on the incidents:

* **ban** (country AA): a messenger banned ISP by ISP over two days (tcp_ip), with the cloud
  subnets it fled to blocked too: an innocent cloud service fails in the same ASNs for 6-24 h
  (collateral damage), then the subnets are unblocked. One ASN blocks in one city only (35 % of
  its probes: a partial rollout); some ASNs have only 3 or 4 probes.
* **throttling** (country BB): SNI throttling of a social network on the mobile operators only.
* **vpn** (country CC): a VPN protocol blocked on some ISPs (``circumvention``).
* benign: **one probe offline** for 6 h (its controls fail); **one ASN's outage** for 3 h (every
  probe's controls fail; half the target verdicts still say tcp_ip, as when no control ran);
  a **worldwide outage** of a service for 2 h (probes in every country fail, tcp_ip or
  inconclusive); **noisy probes** (3 % of the fleet fail 25 % of the time, every probe 1 %).

Ours (``probe.analysis.fleet_events``) runs on every observation, bin by bin, as the collector
runs it. The anchor is ooni/data's CUSUM (``cusum_detect``, via bench/events_accuracy.py's
``_run_anchor``) on each (service, ASN)'s pooled measurements, as ooni/data runs it per (ASN,
domain): no controls, any failure counts. Printed: per-network start and end error (intervals,
p50/p95), delay to detection, missed and false events (false ones split into the benign cases),
detection by the network's number of probes.

    .venv/bin/python bench/fleet_events.py [--probes N] [--days D] [--seed S | --seeds S,S,...]
                                           [--verbose] [--json]

``--seeds`` runs one fleet per seed, prints each table and then one over all of them (errors pooled,
counts summed), so that a p95 is not one event's accident. ``--verbose`` prints, per scripted
network event, what ours found: start and end error, delay, the probes and share.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.events_accuracy import _q, _run_anchor  # noqa: E402  (the anchor, reused)
from probe.analysis.events import CusumParams, Point, Series  # noqa: E402
from probe.analysis.fleet_events import FleetDetector, FleetEvent, FleetParams, Observation  # noqa: E402

INTERVAL = 900.0
T0 = 1_780_000_000.0 - (1_780_000_000.0 % INTERVAL)
HOUR = 3600.0 / INTERVAL  # bins per hour
LEAK = 0.03  # share of ok answers while a blocking is in force
NOISE = 0.01
NOISY = (0.03, 0.25)  # share of noisy probes, their failure rate
NOISE_KINDS = ("tcp_ip", "tcp_ip", "tcp_ip", "dns", "tls")


@dataclass(frozen=True)
class Episode:
    """The truth: ``service`` fails with ``kind`` for ``probes`` from ``onset`` to ``lift`` (None: ongoing)."""

    case: str
    asn: str
    cc: str
    service: str
    kind: str
    onset: float
    lift: float | None
    probes: frozenset[str]
    network_probes: int


@dataclass(frozen=True)
class Outage:
    """Benign: these probes' links are down (controls fail) from ``start`` to ``end``."""

    case: str
    probes: frozenset[str]
    start: float
    end: float


@dataclass
class Fleet:
    probes: list[tuple[str, str, str, float, float, tuple[str, ...]]]  # id, cc, asn, phase, noise, services
    asn_probes: dict[str, list[str]]
    episodes: list[Episode]
    outages: list[Outage]
    world: tuple[str, float, float]  # service, start, end
    benign: dict[tuple[str, str], str]  # (asn or cc, service) -> benign case that touches it
    n_bins: int


def _t(bins: float) -> float:
    return T0 + bins * INTERVAL


def build(n_probes: int, days: float, seed: int) -> Fleet:
    rng = random.Random(seed)
    n_bins = int(days * 24 * HOUR)
    countries = ["AA", "BB", "CC", "DD"] + [f"{chr(69 + i // 26)}{chr(65 + i % 26)}" for i in range(41)]
    # ASNs: 320, the scripted countries first; sizes drawn so that the total is n_probes
    plan: list[tuple[str, str, int]] = []
    asn = 64500
    fixed = {"AA": [3, 3, 4, 12, 25, 40, 60, 80, 30, 20, 15, 9], "BB": [40, 60, 30, 25, 20, 15, 12, 10, 8, 6],
             "CC": [30, 25, 20, 15, 12, 10, 5, 3], "DD": [40, 30, 20]}
    for cc, sizes in fixed.items():
        for size in sizes:
            plan.append((cc, f"AS{asn}", size))
            asn += 1
    others = 320 - len(plan)
    left = max(3 * others, n_probes - sum(s for _, _, s in plan))
    weights = [rng.lognormvariate(0, 1) for _ in range(others)]
    total_w = sum(weights)
    for k in range(others):
        plan.append((countries[4 + k % (len(countries) - 4)], f"AS{asn}", max(3, int(left * weights[k] / total_w))))
        asn += 1
    short = n_probes - sum(size for _, _, size in plan)
    if short > 0:  # the rounding's remainder goes to the largest ASN outside the script
        scripted = sum(len(sizes) for sizes in fixed.values())
        k = max(range(scripted, len(plan)), key=lambda i: plan[i][2])
        plan[k] = (plan[k][0], plan[k][1], plan[k][2] + short)
    probes: list[tuple[str, str, str, float, float, tuple[str, ...]]] = []
    asn_probes: dict[str, list[str]] = {}
    for cc, a, size in plan:
        for _ in range(size):
            pid = f"p{len(probes)}"
            services = {"AA": ("messenger", "cloud-shop"), "BB": ("social",), "CC": ("vpn-wg",)}.get(cc, ("news",))
            noise = NOISY[1] if rng.random() < NOISY[0] else NOISE
            probes.append((pid, cc, a, rng.uniform(0, INTERVAL), noise, (*services, "global-chat")))
            asn_probes.setdefault(a, []).append(pid)
    asns = {cc: [a for c, a, _ in plan if c == cc] for cc in fixed}
    episodes: list[Episode] = []
    for k, a in enumerate(asns["AA"]):
        members = asn_probes[a]
        on = _t(rng.uniform(0.5, 2.5) * 24 * HOUR * min(1.0, days / 3.0))
        partial = k == 4  # one city of this ISP only
        hit = frozenset(members[: max(1, int(0.35 * len(members)))] if partial else members)
        episodes.append(Episode("ban", a, "AA", "messenger", "tcp_ip", on, None, hit, len(members)))
        off = on + rng.uniform(6, 24) * HOUR * INTERVAL
        episodes.append(Episode("collateral", a, "AA", "cloud-shop", "tcp_ip", on,
                                off if off < _t(n_bins - 4 * HOUR) else None, hit, len(members)))
    for a in asns["BB"][:4]:  # the mobile operators
        on = _t(rng.uniform(0.8, 1.2) * 24 * HOUR * min(1.0, days / 3.0))
        off = on + 24 * HOUR * INTERVAL
        episodes.append(Episode("throttling", a, "BB", "social", "throttling", on,
                                off if off < _t(n_bins - 4 * HOUR) else None, frozenset(asn_probes[a]),
                                len(asn_probes[a])))
    for a in asns["CC"][:3] + asns["CC"][-1:]:
        on = _t(rng.uniform(0.3, 2.0) * 24 * HOUR * min(1.0, days / 3.0))
        episodes.append(Episode("vpn", a, "CC", "vpn-wg", "circumvention", on, None, frozenset(asn_probes[a]),
                                len(asn_probes[a])))
    mid = n_bins / 2
    offline = asn_probes[asns["AA"][7]][0]
    outages = [Outage("probe-offline", frozenset({offline}), _t(mid - 3 * HOUR), _t(mid + 3 * HOUR)),
               Outage("asn-outage", frozenset(asn_probes[asns["DD"][0]]), _t(mid + 5 * HOUR), _t(mid + 8 * HOUR))]
    world = ("global-chat", _t(mid - 10 * HOUR), _t(mid - 8 * HOUR))
    benign = {(asns["AA"][7], "messenger"): "probe-offline", (asns["DD"][0], "news"): "asn-outage",
              (asns["DD"][0], "global-chat"): "asn-outage"}
    return Fleet(probes, asn_probes, episodes, outages, world, benign, n_bins)


def _noise_kind(rng: random.Random) -> str:
    return NOISE_KINDS[int(rng.random() * len(NOISE_KINDS))]


def observe(fleet: Fleet, b: int, rng: random.Random,
            blocked: dict[tuple[str, str], list[Episode]]) -> list[Observation]:
    """Every probe's measurements in bin ``b``: its targets and one control."""
    out: list[Observation] = []
    w_service, w_start, w_end = fleet.world
    for pid, cc, a, phase, noise, services in fleet.probes:
        t = T0 + b * INTERVAL + phase
        down = any(o.start <= t < o.end and pid in o.probes for o in fleet.outages)
        out.append(Observation(t, pid, cc, a, "control", None if down else False, control=True))
        for service in services:
            blocking: object = False
            if down:
                blocking = "tcp_ip" if rng.random() < 0.5 else None  # no control ran: it looks like blocking
            elif service == w_service and w_start <= t < w_end:
                blocking = "tcp_ip" if rng.random() < 0.7 else None
            else:
                for ep in blocked.get((pid, service), ()):
                    if ep.onset <= t and (ep.lift is None or t < ep.lift) and rng.random() >= LEAK:
                        blocking = ep.kind
                if blocking is False and rng.random() < noise:
                    blocking = _noise_kind(rng)
            out.append(Observation(t, pid, cc, a, service, blocking))
    return out


@dataclass
class Run:
    ours: list[FleetEvent]
    anchor: list[tuple[str, str, float, float | None, float]]  # asn, service, start, end, detected
    seconds_ours: float
    seconds_anchor: float
    observations: int
    late: int


def run(fleet: Fleet, seed: int, params: FleetParams) -> Run:
    rng = random.Random(seed + 1)
    blocked: dict[tuple[str, str], list[Episode]] = {}
    for ep in fleet.episodes:
        for pid in ep.probes:
            blocked.setdefault((pid, ep.service), []).append(ep)
    det = FleetDetector(params)
    pooled: dict[tuple[str, str], tuple[array[float], bytearray]] = {}
    spent = 0.0
    count = 0
    for b in range(fleet.n_bins):
        obs = observe(fleet, b, rng, blocked)
        count += len(obs)
        for o in obs:
            if not o.control:
                times, ys = pooled.setdefault((o.asn, o.service), (array("d"), bytearray()))
                times.append(o.time)
                ys.append(0 if o.blocking is False else 1)
        began = time.process_time()
        det.feed(obs)
        det.advance(T0 + (b + 1) * INTERVAL)
        spent += time.process_time() - began
    began = time.process_time()
    det.flush()
    spent += time.process_time() - began
    began = time.process_time()
    anchor: list[tuple[str, str, float, float | None, float]] = []
    for (a, service), (times, ys) in pooled.items():
        order = sorted(range(len(times)), key=times.__getitem__)
        points = tuple(Point(times[i], str(i), "ok" if ys[i] == 0 else "blocked") for i in order)
        events, fired, _ = _run_anchor(Series(a, service, service, "any", "any", points), CusumParams())
        # the anchor run by a collector would know at the end of the bin, like ours
        anchor += [(a, service, e.start_time, e.end_time, (f // INTERVAL + 1) * INTERVAL)
                   for e, f in zip(events, fired, strict=True)]
    return Run(det.events(), anchor, spent, time.process_time() - began, count, det.late)


# -- scoring -------------------------------------------------------------------------------------


@dataclass
class Score:
    start: list[float]
    end: list[float]
    end_mismatch: list[str]
    delay: list[float]
    missed: list[Episode]
    false: dict[str, int]
    detected_by_size: dict[str, list[int]]
    #: each scripted episode and the index of the found event matched to it (None: missed)
    matched: list[tuple[Episode, int | None]] = field(default_factory=list)

    def add(self, other: Score) -> None:
        """Pool another run's figures into this one (several seeds)."""
        self.start += other.start
        self.end += other.end
        self.end_mismatch += other.end_mismatch
        self.delay += other.delay
        self.missed += other.missed
        self.matched += other.matched
        for case, n in other.false.items():
            self.false[case] = self.false.get(case, 0) + n
        for bucket, (hit, total) in other.detected_by_size.items():
            mine = self.detected_by_size.setdefault(bucket, [0, 0])
            mine[0] += hit
            mine[1] += total


def _bucket(n: int) -> str:
    return "3 probes" if n <= 3 else ("4-9 probes" if n < 10 else ">= 10 probes")


def score(fleet: Fleet, found: Sequence[tuple[str, str, str, float, float | None, float]],
          typed: bool, lateness: int) -> Score:
    """found: (asn, service, type, start, end, detected_at) at the ASN scope; the delay counts the
    ``lateness`` bins the collector waits for late uploads before it closes a bin."""
    sc = Score([], [], [], [], [], {}, {})
    used: set[int] = set()
    for ep in fleet.episodes:
        stop = ep.lift if ep.lift is not None else float("inf")
        best = None
        for j, (a, service, kind, start, _, _) in enumerate(found):
            if j in used or a != ep.asn or service != ep.service or (typed and kind != ep.kind):
                continue
            if not ep.onset - 12 * INTERVAL <= start <= stop:
                continue
            if best is None or abs(start - ep.onset) < abs(found[best][3] - ep.onset):
                best = j
        bucket = sc.detected_by_size.setdefault(_bucket(ep.network_probes), [0, 0])
        bucket[1] += 1
        sc.matched.append((ep, best))
        if best is None:
            sc.missed.append(ep)
            continue
        bucket[0] += 1
        used.add(best)
        _, _, _, start, end, detected = found[best]
        sc.start.append(abs(start - ep.onset) / INTERVAL)
        sc.delay.append((detected - ep.onset) / INTERVAL + lateness)
        if ep.lift is not None and end is not None:
            sc.end.append(abs(end - ep.lift) / INTERVAL)
        elif (ep.lift is None) != (end is None):
            sc.end.append(float("inf"))
            sc.end_mismatch.append(f"{ep.case}:{ep.asn}({ep.network_probes} probes):"
                                   + ("ended, truth ongoing" if end is not None else "ongoing, truth ended "
                                      f"{(fleet.n_bins * INTERVAL + T0 - (ep.lift or 0)) / INTERVAL:.1f} "
                                      "intervals before the run's end"))
    world = fleet.world[0]
    for j, (a, service, _, _, _, _) in enumerate(found):
        if j in used:
            continue
        case = "worldwide-outage" if service == world else fleet.benign.get((a, service), "noise")
        sc.false[case] = sc.false.get(case, 0) + 1
    return sc


def _row(label: str, ours: str, anchor: str, goal: str = "") -> str:
    return f"{label:46} {ours:>16} {anchor:>16}   {goal}"


@dataclass
class Scored:
    """One run's (or several runs' pooled) figures."""

    ours: Score
    anchor: Score
    scripted: int
    partial_shares: list[float]
    cc_found: int
    cc_scripted: int
    cc_extra: int
    verbose: list[str]

    def add(self, other: Scored) -> None:
        self.ours.add(other.ours)
        self.anchor.add(other.anchor)
        self.scripted += other.scripted
        self.partial_shares += other.partial_shares
        self.cc_found += other.cc_found
        self.cc_scripted += other.cc_scripted
        self.cc_extra += other.cc_extra


def scored(fleet: Fleet, result: Run, params: FleetParams) -> Scored:
    ours_asn = [e for e in result.ours if e.scope == "asn"]
    asn_events = [(e.network, e.service, e.type, e.start_time, e.end_time, e.detected_at) for e in ours_asn]
    anchor = [(a, s, "", st, en, f) for a, s, st, en, f in result.anchor]
    ours = score(fleet, asn_events, typed=True, lateness=params.lateness)
    anc = score(fleet, anchor, typed=False, lateness=params.lateness)
    truth_cc = {(ep.cc, ep.service, ep.kind) for ep in fleet.episodes}
    cc_found = {(e.network, e.service, e.type) for e in result.ours if e.scope == "cc"}
    partial = [e.share for e in ours_asn if e.network == fleet.episodes[8].asn and e.service == "messenger"]
    return Scored(ours, anc, len(fleet.episodes), partial[:1], len(cc_found & truth_cc), len(truth_cc),
                  len(cc_found - truth_cc), per_event(fleet, ours, ours_asn, params))


def per_event(fleet: Fleet, sc: Score, found: Sequence[FleetEvent], params: FleetParams) -> list[str]:
    """One line per scripted network event: what ours found for it (errors in intervals)."""
    probes = {a: len(ps) for a, ps in fleet.asn_probes.items()}
    noisy = {pid for pid, _, _, _, noise, _ in fleet.probes if noise > NOISE}
    lines = [f"{'case':11} {'asn':8} {'service':10} {'type':13} {'net':>4} {'hit':>4} {'noisy':>5} "
             f"{'start err':>9} {'end err':>8} {'delay':>6} {'probes':>6} {'share':>5}  end bound (intervals)"]
    for ep, j in sc.matched:
        head = (f"{ep.case:11} {ep.asn:8} {ep.service:10} {ep.kind:13} {probes[ep.asn]:4d} {len(ep.probes):4d} "
                f"{len(ep.probes & noisy):5d} ")
        if j is None:
            lines.append(head + "missed")
            continue
        e = found[j]
        end = "-" if e.end_time is None or ep.lift is None else f"{(e.end_time - ep.lift) / INTERVAL:+8.2f}"
        if e.end_time is None and ep.lift is not None:
            end = "open"
        elif e.end_time is not None and ep.lift is None:
            end = "ended"
        bound = "" if e.end_low is None or e.end_high is None else (
            f"[{(e.end_low - T0) / INTERVAL:.2f}, {(e.end_high - T0) / INTERVAL:.2f}]"
            + (f" lift {(ep.lift - T0) / INTERVAL:.2f}" if ep.lift is not None else ""))
        lines.append(head + f"{(e.start_time - ep.onset) / INTERVAL:+9.2f} {end:>8} "
                     f"{(e.detected_at - ep.onset) / INTERVAL + params.lateness:6.2f} {e.probes:6d} {e.share:5.2f}  "
                     + bound)
    return lines


def table(sc: Scored, lateness: int) -> list[str]:
    ours, anc = sc.ours, sc.anchor
    benign_cases = ("probe-offline", "asn-outage", "worldwide-outage")

    def q(values: list[float], p: float) -> str:
        return f"{_q(values, p):.2f}" if values else "-"

    lines = [_row("", "ours", "anchor (CUSUM)", "goal"),
             _row("start error p50 / p95 (intervals)", f"{q(ours.start, .5)} / {q(ours.start, .95)}",
                  f"{q(anc.start, .5)} / {q(anc.start, .95)}", "p95 <= 1"),
             _row("end error p50 / p95 (intervals)", f"{q(ours.end, .5)} / {q(ours.end, .95)}",
                  f"{q(anc.end, .5)} / {q(anc.end, .95)}", "p95 <= 1"),
             _row("end error max (intervals)", q(ours.end, 1.0), q(anc.end, 1.0)),
             _row(f"delay to detection p50 / p95 (+{lateness} bins wait)",
                  f"{q(ours.delay, .5)} / {q(ours.delay, .95)}",
                  f"{q(anc.delay, .5)} / {q(anc.delay, .95)}"),
             _row("missed events (of scripted)", f"{len(ours.missed)} / {sc.scripted}",
                  f"{len(anc.missed)} / {sc.scripted}", "0")]
    for case in benign_cases:
        lines.append(_row(f"false events: {case}", str(ours.false.get(case, 0)), str(anc.false.get(case, 0)), "0"))
    lines.append(_row("false events: elsewhere (noise, noisy probes)", str(ours.false.get("noise", 0)),
                      str(anc.false.get("noise", 0)), "0"))
    for bucket in ("3 probes", "4-9 probes", ">= 10 probes"):
        o, a = ours.detected_by_size.get(bucket, [0, 0]), anc.detected_by_size.get(bucket, [0, 0])
        lines.append(_row(f"detected in networks of {bucket}", f"{o[0]} / {o[1]}", f"{a[0]} / {a[1]}"))
    shares = "-" if not sc.partial_shares else (
        f"{sc.partial_shares[0]:.2f}" if len(sc.partial_shares) == 1
        else f"{min(sc.partial_shares):.2f} to {max(sc.partial_shares):.2f}")
    lines.append(_row("partial rollout (35 % of one ASN): share shown", shares, "n/a"))
    lines.append(_row("country-scope events found / scripted", f"{sc.cc_found} / {sc.cc_scripted}", "n/a"))
    lines.append(_row("country-scope events not scripted", str(sc.cc_extra), "n/a"))
    return lines


def figures_of(sc: Scored) -> dict[str, Any]:
    def side(s: Score) -> dict[str, Any]:
        return {"start_p50": _q(s.start, .5), "start_p95": _q(s.start, .95), "end_p50": _q(s.end, .5),
                "end_p95": _q(s.end, .95), "end_max": _q(s.end, 1.0), "delay_p50": _q(s.delay, .5),
                "delay_p95": _q(s.delay, .95), "missed": len(s.missed), "false": s.false,
                "by_size": s.detected_by_size}
    ours = side(sc.ours)
    ours["missed_list"] = [f"{ep.case}:{ep.asn}:{ep.service}" for ep in sc.ours.missed]
    ours["end_mismatch"] = sc.ours.end_mismatch
    return {"ours": ours, "anchor": side(sc.anchor), "scripted": sc.scripted}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", default="", help="comma-separated seeds: one run each, then the pooled table")
    ap.add_argument("--verbose", action="store_true", help="also print ours per scripted network event")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    if not 0.5 <= args.days <= 7 or not 1000 <= args.probes <= 50_000:
        ap.error("--days in [0.5, 7], --probes in [1000, 50000]")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or [args.seed]
    except ValueError:
        ap.error("--seeds: integers separated by commas")
    params = FleetParams(interval=INTERVAL)
    pooled: Scored | None = None
    per_seed: dict[str, Any] = {}
    for seed in seeds:
        began = time.monotonic()
        fleet = build(args.probes, args.days, seed)
        result = run(fleet, seed, params)
        sc = scored(fleet, result, params)
        print(f"seed {seed}: fleet: {len(fleet.probes)} probes, {len(fleet.asn_probes)} ASNs, "
              f"{len({cc for _, cc, _, _, _, _ in fleet.probes})} countries; {fleet.n_bins} intervals of "
              f"{INTERVAL:.0f} s; {result.observations} measurements ({result.late} late); "
              f"{len(fleet.episodes)} scripted network events")
        print("errors and delays in measurement intervals; ASN scope; anchor = ooni/data CUSUM on each (service, ASN)")
        print("\n".join(table(sc, params.lateness)))
        if args.verbose:
            print("ours per scripted network event (net: the ASN's probes; hit: those blocked; noisy: of them):")
            print("\n".join(sc.verbose))
        if sc.ours.end_mismatch:
            print("end error inf (ours): " + ", ".join(sc.ours.end_mismatch))
        if sc.ours.missed:
            print("missed by ours: " + ", ".join(f"{ep.case}:{ep.asn}:{ep.service}" for ep in sc.ours.missed))
        print(f"cpu: ours {result.seconds_ours:.1f} s ({1e6 * result.seconds_ours / result.observations:.1f} us per "
              f"measurement), anchor {result.seconds_anchor:.1f} s; elapsed {time.monotonic() - began:.1f} s\n")
        per_seed[str(seed)] = {**figures_of(sc), "probes": len(fleet.probes), "asns": len(fleet.asn_probes),
                               "countries": len({cc for _, cc, _, _, _, _ in fleet.probes}), "bins": fleet.n_bins,
                               "interval_s": INTERVAL, "observations": result.observations, "late": result.late,
                               "cpu_s": {"ours": result.seconds_ours, "anchor": result.seconds_anchor}}
        if pooled is None:
            pooled = sc
        else:
            pooled.add(sc)
    assert pooled is not None
    if len(seeds) > 1:
        print(f"all {len(seeds)} seeds ({', '.join(map(str, seeds))}) pooled: "
              f"{pooled.scripted} scripted network events")
        print("\n".join(table(pooled, params.lateness)))
    if args.json:
        figures = per_seed[str(seeds[0])] if len(seeds) == 1 else {**per_seed[str(seeds[0])], **figures_of(pooled),
                                                                   "seeds": per_seed}
        print(json.dumps(figures, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
