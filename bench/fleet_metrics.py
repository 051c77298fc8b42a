"""Fleet dashboards at fleet size, two designs side by side: 10,000 simulated probes in a real VictoriaMetrics.

    PYTHONPATH=. python bench/fleet_metrics.py [--probes 10000] [--old-probes 10000] [--asns 320] [--countries 45]

**New design** (issue 17): each probe rolls its verdicts up per service and vmagent sends only the
fleet's series (probe.fleet.vmagent.CENTRAL_FAMILIES). Per probe, the bench imports exactly what
vmagent would send: the samples of a real daemon rendering (tests/synthetic_metrics.py, default
targets, upload on) that pass the real relabel rules (health, upload, build, ``up``), with the
probe's own ``probe_service_state`` (rolled up by probe.analysis.service_state from the scenario's
per-target verdicts), ``probe_last_result_timestamp_seconds`` and its ongoing events. Then the
recording rules of deploy/rules/fleet.rules.yml and every panel query of the fleet dashboard
(deploy/grafana/dashboards/probe-fleet.json).

**Old design** (before issue 17's rework, frozen below in ``OLD_RULES`` and ``OLD_PANELS``): every
probe sends its per-target families; the series the fleet dashboard and its five recording rules
read are imported (``probe_blocking`` for 8 types per target, ``probe_accessible``,
``probe_verdict_inconclusive``, ``probe_last_check_timestamp_seconds``, events, build info, ``up``:
543 per probe; the other ~950 per-target series a probe sent are left out, which only flatters the
old design). ``--old-probes`` (default: as many as ``--probes``) can shrink it; ``0`` skips it.

Both fleets: ``--probes`` probes spread over ``--asns`` networks in ``--countries`` countries, the
same scripted truth (in about one network in ten, one or two services blocked for 30-100 % of the
network's probes; a few networks throttle one service; a few have an outage), with the labels vmagent
adds (``probe``, ``cc``, ``asn``, ``instance``, ``job``), ``--points`` samples each ``--step`` seconds
apart ending now. Each design gets its own fresh ``/usr/bin/victoria-metrics`` on loopback, one after
the other. The recording rules are evaluated as vmalert would, timed (first evaluation after the
import, cold, and the median of ``--repeat``; the old design is evaluated ``--old-repeat`` times,
each round there takes about a minute) and their results imported; then every panel query runs as an
instant query and as a range query over the imported window, with VictoriaMetrics' result cache off
(``-search.disableCache``: the cost of a first look). Bounded: each import stops at ``--deadline``
seconds and says how far it got.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe.analysis.service_state import service_states, target_state  # noqa: E402
from probe.core import config  # noqa: E402
from probe.fleet.vmagent import remote_write_relabel  # noqa: E402
from probe.service.metrics import BLOCKING_TYPES  # noqa: E402
from tests.service.test_prometheus_e2e import dashboard_queries  # noqa: E402
from tests.synthetic_metrics import daemon_metrics, relabelled  # noqa: E402
from tests.test_deploy import recording_rules  # noqa: E402
from tests.vm import MISSING, SKIP_REASON, VictoriaMetrics  # noqa: E402

CHUNK = 100  # probes per import request
_ALL = '{cc=~".*", asn=~".*", service=~".*"}'
_NET = '{job="probe", cc=~".*", asn=~".*"}'
#: The old design's recording rules (deploy/rules/fleet.rules.yml before issue 17's rework).
OLD_RULES: dict[str, str] = {
    "probe_service:blocked:max": "max by (job, instance, probe, cc, asn, service) "
                                 "((1 - probe_accessible) * (1 - probe_verdict_inconclusive))",
    "probe_service:throttled:max": "max by (job, instance, probe, cc, asn, service) "
                                   '(probe_blocking{type="throttling"})',
    "probe_service:inconclusive:max": "max by (job, instance, probe, cc, asn, service) (probe_verdict_inconclusive)",
    "probe_service:accessible:min": "min by (job, instance, probe, cc, asn, service) (probe_accessible)",
    "probe:last_check_timestamp_seconds:max": "max by (job, instance, probe, cc, asn) "
                                              "(probe_last_check_timestamp_seconds)",
}
_B, _T = f"probe_service:blocked:max{_ALL}", f"probe_service:throttled:max{_ALL}"
_A = f"probe_service:accessible:min{_ALL}"
#: The old design's fleet panel queries (variables on "All"), as its dashboard had them.
OLD_PANELS: list[tuple[str, str]] = [
    ("Services × networks now: blocked", f"count by (service, cc, asn) ({_B} == 1)"),
    ("Services × networks now: throttled", f"count by (service, cc, asn) ({_T} == 1)"),
    ("Services × networks now: outage",
     f"count by (service, cc, asn) (probe_service:inconclusive:max{_ALL} == 1)"),
    ("Services × networks now: ok",
     f"count by (service, cc, asn) ({_A} == 1 unless on (probe, service, cc, asn) ({_B} == 1 or {_T} == 1))"),
    ("Services × networks now: probes", f"count by (service, cc, asn) ({_A})"),
    ("Services × networks now: share blocked",
     f"count by (service, cc, asn) ({_B} == 1) / on (service, cc, asn) count by (service, cc, asn) ({_A})"),
    ("Share of probes seeing blocking, per network", f"avg by (service, cc, asn) (clamp_max({_B} + {_T}, 1))"),
    ("Events per probe (start to end)", f"max by (probe, cc, asn, service, type) (probe_event_active{_ALL})"),
    ("Ongoing events",
     f"max by (probe, cc, asn, service, type) (probe_event_start_timestamp_seconds{_ALL}) * 1000"),
    ("Probes seeing blocking or throttling", f"clamp_max({_B} + {_T}, 1) == 1"),
    ("Probes reporting", f"count(up{_NET} == 1) or vector(0)"),
    ("Probe daemons down", f"count(up{_NET} == 0) or vector(0)"),
    ("Probes reporting by country", f"count by (cc) (up{_NET} == 1)"),
    ("Probe health: newest result age", "time() - max by (probe, cc, asn) "
     '(max_over_time(probe:last_check_timestamp_seconds:max{cc=~".*", asn=~".*"}[1d]))'),
    ("Probe health: newest result age (up)", f"max by (probe, cc, asn) (up{_NET})"),
]


def networks(n_asns: int, n_countries: int, rng: random.Random) -> list[tuple[str, str]]:
    """(cc, asn) pairs: every country has at least one network, the rest spread at random."""
    countries = [chr(65 + i // 26) + chr(65 + i % 26) for i in range(n_countries)]
    return [(countries[i] if i < n_countries else rng.choice(countries), f"AS{64512 + i}") for i in range(n_asns)]


def scenario(nets: list[tuple[str, str]], services: list[str], rng: random.Random) -> dict[str, Any]:
    """Per network: blocked services (with the share of probes that see it), throttled, outage."""
    truth: dict[str, Any] = {}
    for _, asn in nets:
        roll = rng.random()
        if roll < 0.1:
            truth[asn] = {"blocked": {s: rng.uniform(0.3, 1.0) for s in rng.sample(services, 2)}}
        elif roll < 0.13:
            truth[asn] = {"throttled": set(rng.sample(services, 1))}
        elif roll < 0.15:
            truth[asn] = {"outage": True}
    return truth


class Probe:
    """One simulated probe: its network, and what each of its targets' last verdict says."""

    def __init__(self, index: int, nets: list[tuple[str, str]], targets: list[tuple[str, str]],
                 truth: dict[str, Any], end: float) -> None:
        rng = random.Random(index)  # the same probe sees the same thing in both designs
        self.pid = f"p{index:05d}"
        self.cc, self.asn = nets[index % len(nets)]
        net = truth.get(self.asn, {})
        blocked = {s for s, share in net.get("blocked", {}).items() if rng.random() < share}
        throttled, self.outage = net.get("throttled", set()), bool(net.get("outage", False))
        #: target -> (service, blocking type or None)
        self.kinds = {name: (service, "tcp_ip" if service in blocked else "throttling" if service in throttled
                             else None) for name, service in targets}
        self.last_checks = {name: end - rng.uniform(0, 300) for name, _ in targets}

    def base(self) -> str:
        return f'job="probe",instance="{self.pid}",probe="{self.pid}",cc="{self.cc}",asn="{self.asn}"'

    def verdict(self, kind: str | None) -> tuple[str | None, bool, bool]:
        """(blocking, accessible, inconclusive) of a target whose truth is ``kind``."""
        if self.outage:
            return None, False, True
        return kind, kind in (None, "throttling"), False


def _writer(out: list[str], base: str, stamps: list[int]) -> Callable[..., None]:
    def series(name: str, labels: str, value: float) -> None:
        head = f"{name}{{{base}{labels}}} {value:g} "
        out.extend(f"{head}{ts}\n" for ts in stamps)
    return series


def _events(series: Callable[..., None], probe: Probe, last: float) -> None:
    for name, (service, kind) in probe.kinds.items():
        if kind is not None and not probe.outage:
            labels = f',target="{name}",service="{service}",type="{kind}"'
            series("probe_event_active", labels, 1)
            series("probe_event_start_timestamp_seconds", labels, last - 86400)


def old_lines(probe: Probe, stamps: list[int]) -> list[str]:
    """The old design: the per-target series the fleet dashboard and its rules read."""
    out: list[str] = []
    series = _writer(out, probe.base(), stamps)
    series("up", "", 1)
    series("probe_build_info", ',version="0.1.0",schema_version="1",python_version="3.11.2"', 1)
    for name, (service, kind) in probe.kinds.items():
        t = f',target="{name}",service="{service}"'
        blocking, accessible, inconclusive = probe.verdict(kind)
        for btype in BLOCKING_TYPES:
            series("probe_blocking", f'{t},type="{btype}"', 1 if btype == blocking else 0)
        series("probe_accessible", t, 1 if accessible else 0)
        series("probe_verdict_inconclusive", t, 1 if inconclusive else 0)
        series("probe_last_check_timestamp_seconds", t, probe.last_checks[name])
    _events(series, probe, stamps[-1] / 1000)
    return out


def sent_template() -> list[tuple[str, str, float]]:
    """What vmagent sends of a real daemon rendering besides the probe's own service states, result
    time and events: (name, labels, value) of the health, upload, build and ``up`` series."""
    own = {"probe_service_state", "probe_last_result_timestamp_seconds", "probe_event_active",
           "probe_event_start_timestamp_seconds"}
    return [(s.name, "".join(f',{k}="{v}"' for k, v in sorted(s.labels.items())), s.value)
            for s in relabelled(daemon_metrics(upload=True), remote_write_relabel()) if s.name not in own]


def new_lines(probe: Probe, stamps: list[int], template: list[tuple[str, str, float]]) -> list[str]:
    """The new design: exactly what the probe's vmagent sends."""
    out: list[str] = []
    series = _writer(out, probe.base(), stamps)
    for name, labels, value in template:
        series(name, labels, value)
    states = service_states((service, target_state(*probe.verdict(kind))) for service, kind in probe.kinds.values())
    for service, state in sorted(states.items()):
        series("probe_service_state", f',service="{service}",state="{state}"', 1)
    series("probe_last_result_timestamp_seconds", "", max(probe.last_checks.values()))
    _events(series, probe, stamps[-1] / 1000)
    return out


def vm_rss_mb(vm: VictoriaMetrics) -> float:
    assert vm.proc is not None
    for line in Path(f"/proc/{vm.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], int], repeat: int) -> tuple[int, list[float]]:
    n, times = 0, []
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return n, times


def run(design: str, lines: Callable[[Probe, list[int]], list[str]], probes: int, rules: Mapping[str, str],
        panels: list[tuple[str, str]], make: Callable[[int], Probe], stamps: list[int], args: argparse.Namespace,
        repeat: int) -> dict[str, Any]:
    """One design in its own VictoriaMetrics: import, recording rules, panels."""
    end, step = stamps[-1] / 1000, args.step
    with tempfile.TemporaryDirectory(prefix=f"fleet-metrics-{design}-") as tmp:
        vm = VictoriaMetrics(Path(tmp) / "vm").start()
        try:
            started, samples, imported = time.monotonic(), 0, 0
            for first in range(0, probes, CHUNK):
                if time.monotonic() - started > args.deadline:
                    break
                chunk = [line for i in range(first, min(first + CHUNK, probes)) for line in lines(make(i), stamps)]
                vm.import_prometheus("".join(chunk).encode())
                samples += len(chunk)
                imported = min(first + CHUNK, probes)
            vm.flush()
            import_s = time.monotonic() - started
            series = int(vm.get("/api/v1/series/count")[0])  # counting with a query would touch them all
            rule_rows = []
            for record, expr in rules.items():
                n, times = _timed(lambda expr=expr: len(vm.query(expr, at=end)), repeat)
                rule_rows.append({"record": record, "series": n, "first_ms": times[0] * 1000,
                                  "eval_ms": statistics.median(times) * 1000})
                result = vm.query_range(expr, stamps[0] / 1000, end, step)
                vm.import_json([{"metric": {**r["metric"], "__name__": record},
                                 "values": [float(v) for _, v in r["values"]],
                                 "timestamps": [int(float(t) * 1000) for t, _ in r["values"]]} for r in result])
            vm.flush()
            rss = vm_rss_mb(vm)
            rows = []
            for title, expr in panels:
                n, instant = _timed(lambda expr=expr: len(vm.query(expr, at=end)), repeat)
                _, ranged = _timed(lambda expr=expr: len(vm.query_range(expr, stamps[0] / 1000, end, step)), repeat)
                rows.append({"panel": title, "series": n, "instant_ms": statistics.median(instant) * 1000,
                             "range_ms": statistics.median(ranged) * 1000, "expr": expr})
        finally:
            vm.stop()
    return {"design": design, "probes": imported, "series": series, "samples": samples, "import_s": import_s,
            "vm_rss_mb": rss, "rules": rule_rows, "panels": rows,
            "round_first_ms": sum(r["first_ms"] for r in rule_rows),
            "round_ms": sum(r["eval_ms"] for r in rule_rows),
            "panels_instant_ms": sum(r["instant_ms"] for r in rows),
            "panels_range_ms": sum(r["range_ms"] for r in rows)}


def _print(result: dict[str, Any]) -> None:
    n = max(result["probes"], 1)
    print(f"== {result['design']} design: {result['probes']} probes, {result['series']:,} series "
          f"({result['series'] / n:.0f} per probe), {result['samples']:,} samples")
    print(f"import_s {result['import_s']:.1f} ({result['samples'] / result['import_s']:,.0f} samples/s), "
          f"vm_rss_mb {result['vm_rss_mb']:.0f}")
    print(f"{'recording rule (one evaluation)':<48} {'series':>7} {'first_ms':>11} {'median_ms':>9}")
    for rule in result["rules"]:
        print(f"{rule['record']:<48} {rule['series']:>7} {rule['first_ms']:>11.1f} {rule['eval_ms']:>9.1f}")
    print(f"{'one round (all rules)':<48} {'':>7} {result['round_first_ms']:>11.1f} {result['round_ms']:>9.1f}")
    print(f"{'panel':<48} {'series':>7} {'instant_ms':>11} {'range_ms':>9}")
    for row in result["panels"]:
        print(f"{row['panel'][:48]:<48} {row['series']:>7} {row['instant_ms']:>11.1f} {row['range_ms']:>9.1f}")
    slowest = max((max(r["instant_ms"], r["range_ms"]) for r in result["panels"]), default=0.0)
    print(f"{'all panels (sum) / slowest':<48} {'':>7} {result['panels_instant_ms']:>11.1f} "
          f"{result['panels_range_ms']:>9.1f}  slowest {slowest:.1f} ms")


def _ratios(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    def ratio(key: str) -> float:
        return old[key] / new[key] if new[key] else float("inf")

    return {key: ratio(key) for key in ("series", "import_s", "vm_rss_mb", "round_first_ms", "round_ms",
                                        "panels_instant_ms", "panels_range_ms")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--old-probes", type=int, default=None, help="probes of the old design (default --probes; "
                        "0: skip it)")
    parser.add_argument("--asns", type=int, default=320)
    parser.add_argument("--countries", type=int, default=45)
    parser.add_argument("--points", type=int, default=3, help="samples per series")
    parser.add_argument("--step", type=int, default=300, help="seconds between samples")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old-repeat", type=int, default=1, help="evaluations of the old design's rules and panels")
    parser.add_argument("--deadline", type=float, default=300, help="seconds for each import")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if MISSING:
        print(SKIP_REASON, file=sys.stderr)
        return 2
    old_probes = args.probes if args.old_probes is None else args.old_probes
    if not 40 <= args.countries <= args.asns <= 676 or args.probes < args.asns or 0 < old_probes < args.asns:
        parser.error("need 40 <= countries <= asns <= 676 and probes >= asns")
    rng = random.Random(17)
    targets = [(t.name, t.service) for t in config.load(config.DEFAULT_TARGETS).targets]
    services = sorted({s for _, s in targets if s != "control"})
    nets = networks(args.asns, args.countries, rng)
    truth = scenario(nets, services, rng)
    end = int(time.time()) - 60
    stamps = [(end - args.step * i) * 1000 for i in reversed(range(args.points))]

    def make(i: int) -> Probe:
        return Probe(i, nets, targets, truth, end)

    template = sent_template()
    panels = [(where.split(": ", 1)[1], expr) for where, expr in dashboard_queries()
              if where.startswith("probe-fleet.json")]
    results = [run("new", lambda p, st: new_lines(p, st, template), args.probes, recording_rules(), panels, make,
                   stamps, args, args.repeat)]
    if old_probes:
        results.append(run("old", old_lines, old_probes, OLD_RULES, OLD_PANELS, make, stamps, args, args.old_repeat))

    blocked_nets = sum(1 for t in truth.values() if "blocked" in t)
    print(f"fleet: {len({a for _, a in nets})} ASNs, {len({c for c, _ in nets})} countries "
          f"({blocked_nets} networks with blocking), {args.points} samples per series {args.step} s apart")
    for result in results:
        _print(result)
    figures: dict[str, Any] = {"new": results[0]}
    if len(results) == 2:
        old, new = results[1], results[0]
        figures["old"], figures["ratio_old_to_new"] = old, _ratios(old, new)
        scale = ("" if old["probes"] == new["probes"]
                 else f" (old design at {old['probes']} probes, new at {new['probes']})")
        print(f"== old / new{scale}: " + ", ".join(f"{k} {v:.1f}x" for k, v in figures["ratio_old_to_new"].items()))
    if args.json:
        print(json.dumps(figures))
    return 0 if all(r["probes"] == (args.probes if r["design"] == "new" else old_probes) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
