"""Fleet dashboards at fleet size: 10,000 simulated probes' series in a real VictoriaMetrics.

    PYTHONPATH=. python bench/fleet_metrics.py [--probes 10000] [--asns 320] [--countries 45]

Starts ``/usr/bin/victoria-metrics`` on loopback with an empty data directory, imports
(``/api/v1/import/prometheus``) the series the fleet dashboard reads for ``--probes`` probes spread
over ``--asns`` networks in ``--countries`` countries, each probe measuring the default targets
(probe/data/targets.yaml): ``probe_blocking`` (7 types per target), ``probe_accessible``,
``probe_verdict_inconclusive``, ``probe_last_check_timestamp_seconds``, ``probe_event_*`` for its
blocked targets, ``probe_build_info`` and ``up``, with the labels vmagent adds (``probe``, ``cc``,
``asn``, ``instance``, ``job``), ``--points`` samples each ``--step`` seconds apart ending now.
Scripted truth: in about one network in ten, one or two services are blocked for 30-100 % of the
network's probes; a few networks throttle one service; a few have an outage (inconclusive).

Then it evaluates the fleet recording rules (deploy/rules/fleet.rules.yml) as vmalert would, at
every imported timestamp, times one evaluation of each (the central store's cost per interval) and
imports their results. Then it runs every panel query of the fleet dashboard
(deploy/grafana/dashboards/probe-fleet.json, variables on "All") as an instant query and as a range query
over the imported window, with VictoriaMetrics' result cache off (``-search.disableCache``: the cost of a first
look), three times each, and prints the median time and the series returned. Bounded: the import stops at
``--deadline`` seconds and says how far it got.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe.core import config  # noqa: E402
from probe.service.metrics import BLOCKING_TYPES  # noqa: E402
from tests.service.test_prometheus_e2e import dashboard_queries  # noqa: E402
from tests.test_deploy import recording_rules  # noqa: E402
from tests.vm import MISSING, SKIP_REASON, VictoriaMetrics  # noqa: E402

CHUNK = 100  # probes per import request


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


def probe_lines(pid: str, cc: str, asn: str, targets: list[tuple[str, str]], truth: dict[str, Any],
                stamps: list[int], rng: random.Random) -> list[str]:
    base = f'job="probe",instance="{pid}",probe="{pid}",cc="{cc}",asn="{asn}"'
    net = truth.get(asn, {})
    blocked = {s for s, share in net.get("blocked", {}).items() if rng.random() < share}
    throttled, outage = net.get("throttled", set()), net.get("outage", False)
    out = []

    def series(name: str, labels: str, value: float) -> None:
        head = f"{name}{{{base}{labels}}} {value:g} "
        out.extend(f"{head}{ts}\n" for ts in stamps)

    series("up", "", 1)
    series("probe_build_info", ',version="0.1.0",schema_version="1",python_version="3.11.2"', 1)
    last = stamps[-1] / 1000
    for name, service in targets:
        t = f',target="{name}",service="{service}"'
        kind = "tcp_ip" if service in blocked else "throttling" if service in throttled else None
        for btype in BLOCKING_TYPES:
            series("probe_blocking", f'{t},type="{btype}"', 1 if btype == kind and not outage else 0)
        series("probe_accessible", t, 1 if kind in (None, "throttling") and not outage else 0)
        series("probe_verdict_inconclusive", t, 1 if outage else 0)
        series("probe_last_check_timestamp_seconds", t, last - rng.uniform(0, 300))
        if kind is not None and not outage:
            series("probe_event_active", f'{t},type="{kind}"', 1)
            series("probe_event_start_timestamp_seconds", f'{t},type="{kind}"', last - 86400)
    return out


def vm_rss_mb(vm: VictoriaMetrics) -> float:
    assert vm.proc is not None
    for line in Path(f"/proc/{vm.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--asns", type=int, default=320)
    parser.add_argument("--countries", type=int, default=45)
    parser.add_argument("--points", type=int, default=3, help="samples per series")
    parser.add_argument("--step", type=int, default=300, help="seconds between samples")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=900, help="seconds for the import")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if MISSING:
        print(SKIP_REASON, file=sys.stderr)
        return 2
    if not 40 <= args.countries <= args.asns <= 676 or args.probes < args.asns:
        parser.error("need 40 <= countries <= asns <= 676 and probes >= asns")
    rng = random.Random(17)
    targets = [(t.name, t.service) for t in config.load(config.DEFAULT_TARGETS).targets]
    services = sorted({s for _, s in targets if s != "control"})
    nets = networks(args.asns, args.countries, rng)
    truth = scenario(nets, services, rng)
    end = int(time.time()) - 60
    stamps = [(end - args.step * i) * 1000 for i in reversed(range(args.points))]
    queries = [(where.split(": ", 1)[1], expr) for where, expr in dashboard_queries()
               if where.startswith("probe-fleet.json")]

    with tempfile.TemporaryDirectory(prefix="fleet-metrics-") as tmp:
        vm = VictoriaMetrics(Path(tmp) / "vm").start()
        try:
            started, lines, imported = time.monotonic(), 0, 0
            for first in range(0, args.probes, CHUNK):
                if time.monotonic() - started > args.deadline:
                    break
                chunk: list[str] = []
                for i in range(first, min(first + CHUNK, args.probes)):
                    cc, asn = nets[i % len(nets)]
                    chunk += probe_lines(f"p{i:05d}", cc, asn, targets, truth, stamps, rng)
                vm.import_prometheus("".join(chunk).encode())
                lines += len(chunk)
                imported = min(first + CHUNK, args.probes)
            vm.flush()
            import_s = time.monotonic() - started
            series = int(vm.get("/api/v1/series/count")[0])  # counting with a query would touch them all
            rules = []
            for record, expr in recording_rules().items():
                times = []
                for _ in range(args.repeat):  # the first one after the import is cold (index, caches)
                    t0 = time.perf_counter()
                    n = len(vm.query(expr, at=end))
                    times.append(time.perf_counter() - t0)
                rules.append({"record": record, "series": n, "first_ms": times[0] * 1000,
                              "eval_ms": statistics.median(times) * 1000})
                result = vm.query_range(expr, stamps[0] / 1000, end, args.step)
                vm.import_json([{"metric": {**r["metric"], "__name__": record},
                                 "values": [float(v) for _, v in r["values"]],
                                 "timestamps": [int(float(t) * 1000) for t, _ in r["values"]]} for r in result])
            vm.flush()
            rss = vm_rss_mb(vm)
            rows = []
            for title, expr in queries:
                instant, ranged, n = [], [], 0
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    n = len(vm.query(expr, at=end))
                    instant.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    vm.query_range(expr, stamps[0] / 1000, end, args.step)
                    ranged.append(time.perf_counter() - t0)
                rows.append({"panel": title, "series": n, "instant_ms": statistics.median(instant) * 1000,
                             "range_ms": statistics.median(ranged) * 1000, "expr": expr})
        finally:
            vm.stop()

    blocked_nets = sum(1 for t in truth.values() if "blocked" in t)
    print(f"probes:          {imported}/{args.probes} in {len({a for _, a in nets})} ASNs, "
          f"{len({c for c, _ in nets})} countries ({blocked_nets} networks with blocking)")
    print(f"series:          {series} ({series / max(imported, 1):.0f} per probe), {lines} samples")
    print(f"import_s:        {import_s:.1f} ({lines / import_s:,.0f} samples/s)")
    print(f"vm_rss_mb:       {rss:.0f}")
    print(f"{'recording rule (one evaluation)':<48} {'series':>7} {'first_ms':>11} {'median_ms':>9}")
    for rule in rules:
        print(f"{rule['record']:<48} {rule['series']:>7} {rule['first_ms']:>11.1f} {rule['eval_ms']:>9.1f}")
    print(f"{'panel':<48} {'series':>7} {'instant_ms':>11} {'range_ms':>9}")
    for row in rows:
        print(f"{row['panel'][:48]:<48} {row['series']:>7} {row['instant_ms']:>11.1f} {row['range_ms']:>9.1f}")
    if args.json:
        print(json.dumps({"probes": imported, "series": series, "samples": lines, "import_s": import_s,
                          "vm_rss_mb": rss, "rules": rules, "panels": rows}))
    return 0 if imported == args.probes else 1


if __name__ == "__main__":
    raise SystemExit(main())
