"""Throttling detection against the lab's policers and benign conditions, N times each.

Prints the confusion matrix, the rate-estimate error per policer rate, and the
bytes and seconds one decision used (median, max). Needs root (the lab).

    .venv/bin/python bench/throttling_matrix.py --repeat 20
    .venv/bin/python bench/throttling_matrix.py --repeat 3 --only police128,shape1M

Each decision runs ``python -m probe.checks.throughput`` inside the client
namespace against web.telegram.test's ``/large``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from probe.lab import HOSTS, Lab

SNI = "web.telegram.test"
URL = f"https://{SNI}/large?bytes={{bytes}}"
#: An object far larger than the budget, sent whole whatever the client asks (a CDN file that ignores
#: Range): each stopped transfer leaves the server's window in the link's queue.
URL_WHOLE = f"https://{SNI}/large"


@dataclass(frozen=True)
class Case:
    name: str
    throttled: bool
    technique: str
    params: dict[str, Any]
    direction: str = "down"  # what the probe measures
    rate_kbit: float | None = None
    before: tuple[tuple[str, dict[str, Any]], ...] = ()  # applied first, in order (the access link)
    url: str = URL


PATH_RTT = ("latency", {"ms": 30})  # a home link's path to a server: without it no queue builds in the lab


def _link(mbit: float, limit: int = 1000) -> dict[str, Any]:
    """``bufferbloat``'s parameters: a home access link at ``mbit`` with a queue of ``limit`` packets."""
    return {"rate_kbit": mbit * 1000, "limit": limit}


CASES = [
    *(Case(f"police{r}", True, "throttle_sni", {"sni": SNI, "rate_kbit": r, "direction": "down"}, rate_kbit=r)
      for r in (64, 128, 256, 512, 2000)),
    Case("police128-up", True, "throttle_sni", {"sni": SNI, "rate_kbit": 128, "direction": "up"}, "both", 128),
    Case("police256-down", True, "throttle_sni", {"sni": SNI, "rate_kbit": 256, "direction": "down"}, "both", 256),
    *(Case(f"shape{n}M", False, "shape", {"rate_kbit": n * 1000}) for n in (1, 10, 100)),
    Case("loss1", False, "loss", {"percent": 1}),
    Case("loss3", False, "loss", {"percent": 3}),
    Case("jitter", False, "latency", {"ms": 50, "jitter_ms": 20}),
    # The most common volunteer setup: a slow home link with a deep queue (bufferbloat), alone, under
    # the volunteer's own download, or a radio link whose rate changes every few seconds.
    *(Case(f"bloat{n}M", False, "bufferbloat", _link(n, q), before=(PATH_RTT,), url=URL_WHOLE)
      for n, q in ((1, 300), (2, 1000), (5, 1000))),
    *(Case(f"cross{n}M", False, "cross_traffic", {}, before=(PATH_RTT, ("bufferbloat", _link(n, q))), url=URL_WHOLE)
      for n, q in ((1, 300), (2, 1000), (5, 1000))),
    Case("lte", False, "lte", {"rates_kbit": (4000, 1500, 6000, 2500), "period": 3.0, "limit": 1000},
         before=(PATH_RTT,), url=URL_WHOLE),
    # ... and a policer behind such a link must still be found.
    *(Case(f"police{r}-bloat5M", True, "throttle_sni",
           {"sni": SNI, "rate_kbit": r, "direction": "down", "parent": "1:1"}, rate_kbit=r,
           before=(PATH_RTT, ("bufferbloat", _link(5))), url=URL_WHOLE)
      for r in (128, 512)),
]


def decide(lab: Lab, direction: str, url: str = URL) -> dict[str, Any]:
    argv = [sys.executable, "-m", "probe.checks.throughput", "--address", HOSTS[SNI].address, "--sni", SNI,
            "--url", url, "--direction", direction]
    done = lab.exec(lab.ns_client, argv, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--prefix", default="thrbench")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    wanted = {n for n in args.only.split(",") if n}
    cases = [c for c in CASES if not wanted or c.name in wanted]
    rows: list[tuple[Case, dict[str, Any]]] = []
    started = time.monotonic()
    with Lab(args.prefix) as lab:
        for case in cases:
            handles = [lab.apply(t, **p) for t, p in (*case.before, (case.technique, case.params))]
            try:
                for _ in range(args.repeat):
                    out = decide(lab, case.direction, case.url)
                    rows.append((case, out))
                    d = out["decision"]
                    if args.verbose:
                        print(f"{case.name:15} {d['blocking']!s:10} {d['direction']:5} "
                              f"est={d['estimated_rate_kbit']} ctl={d['control_rate_kbit']} runs={d['runs']} "
                              f"p={d['p_value']} ratio={d['ratio']} bytes={d['bytes_used']} "
                              f"s={d['seconds_used']} reason={d['reason']!r}", flush=True)
            finally:
                for handle in reversed(handles):
                    lab.remove(handle)
            mine = [d["decision"]["blocking"] for c, d in rows if c is case]
            print(f"# {case.name}: throttling {mine.count('throttling')}, not {mine.count(False)}, "
                  f"inconclusive {mine.count(None)}  ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            time.sleep(0.5)
    report(rows)
    print(f"\nelapsed {time.monotonic() - started:.0f} s")
    return 0


def _estimate(case: Case, d: dict[str, Any]) -> float | None:
    if case.direction == "both":
        per = d.get("directions", {}).get(case.params.get("direction", "down"), {})
        return per.get("estimated_rate_kbit") if isinstance(per, dict) else None
    return d.get("estimated_rate_kbit")


def report(rows: list[tuple[Case, dict[str, Any]]]) -> None:
    print("\nconfusion matrix (rows: truth, columns: decision)")
    print(f"{'':22}{'throttling':>12}{'not':>8}{'inconcl.':>10}")
    for truth in (True, False):
        got = [r[1]["decision"]["blocking"] for r in rows if r[0].throttled is truth]
        print(f"{'throttled' if truth else 'not throttled':22}{got.count('throttling'):>12}"
              f"{got.count(False):>8}{sum(1 for g in got if g is None):>10}")
    print("\nper case: detected / runs, direction reported, rate error (median, max abs)")
    for name in dict.fromkeys(c.name for c, _ in rows):
        case = next(c for c, _ in rows if c.name == name)
        mine = [d["decision"] for c, d in rows if c.name == name]
        flagged = sum(1 for d in mine if d["blocking"] == "throttling")
        line = f"  {case.name:15} flagged {flagged}/{len(mine)}"
        if case.throttled and case.rate_kbit:
            errors = [(e - case.rate_kbit) / case.rate_kbit for e in (_estimate(case, d) for d in mine)
                      if isinstance(e, int | float)]
            dirs = sorted({str(d["direction"]) for d in mine})
            if errors:
                worst = max(errors, key=abs)
                within = sum(1 for e in errors if abs(e) <= 0.15)
                line += f"  direction {','.join(dirs)}  error median {statistics.median(errors):+.1%} " \
                        f"worst {worst:+.1%}  within 15% {within}/{len(errors)}"
        print(line)
    print("\nper decision (goal: median <= 256 KiB and <= 5 s)")
    for label, truth in (("all", None), ("throttled", True), ("not throttled", False)):
        mine = [d["decision"] for c, d in rows if truth is None or c.throttled is truth]
        if not mine:
            continue
        used = [d["bytes_used"] / 1024 for d in mine]
        secs = [d["seconds_used"] for d in mine]
        print(f"  {label:14} KiB median {statistics.median(used):4.0f} max {max(used):4.0f}; "
              f"seconds median {statistics.median(secs):5.2f} max {max(secs):5.2f}  ({len(mine)} decisions)")


if __name__ == "__main__":
    raise SystemExit(main())
