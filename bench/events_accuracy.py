"""Accuracy of the event detectors on series with known truth (not a timed test).

Replays synthetic series (onsets and lifts, flapping, gaps, outages, several episodes, noise of
1-5 % random failures) and lab timelines modelled on the seed scenarios, through the anchor
(``probe.events.cusum_detect``) and ours (``probe.events.detect``), and prints, per detector:

* start and end timestamp errors, in probe intervals (median, p95, max);
* detection delay, in intervals from the true onset (and in measurements after the first bad one);
* missed and spurious events on the series with episodes;
* false alarms per 1,000 target-days of pure noise (and of noise with outages).

Deterministic (fixed seeds). ``--days`` sets the target-days of pure noise (default 10,000).

    .venv/bin/python bench/events_accuracy.py [--days N] [--trials N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.events import (  # noqa: E402
    CusumParams,
    Detector,
    DetectParams,
    Point,
    Series,
    Status,
    cusum_detect,
    ordered,
    series_from_records,
)
from probe.records import Event, format_time  # noqa: E402

INTERVAL = 300.0
DAY = int(86400 / INTERVAL)  # 288 measurements a day
T0 = 1_700_000_000.0
NOISE_LEVELS = (0.01, 0.02, 0.03, 0.04, 0.05)


@dataclass(frozen=True)
class Truth:
    onset: float
    lift: float | None  # None: still blocked at the end of the series


@dataclass(frozen=True)
class Case:
    family: str
    series: Series
    truths: tuple[Truth, ...]


# -- series generation -----------------------------------------------------------------


def _series(name: str, statuses: Sequence[Status | None], times: Sequence[float]) -> Series:
    points = tuple(Point(t, f"{name}-{i}", s) for i, (t, s) in enumerate(zip(times, statuses, strict=True))
                   if s is not None)
    return Series("bench", name, "svc", "tcp", "tcp_ip", points)


def _timeline(
    rng: random.Random, n: int, episodes: Sequence[tuple[float, float | None]], noise: float, leak: float,
    outages: float = 0.0, flap: bool = False, gaps: Sequence[tuple[int, int]] = (),
) -> tuple[list[Status | None], list[float]]:
    """Statuses at t = T0 + i * INTERVAL; episodes are (onset, lift) times; None = no measurement."""
    times = [T0 + i * INTERVAL for i in range(n)]
    statuses: list[Status | None] = []
    outage_left = 0
    flap_on, flap_left = True, 0
    for t in times:
        blocked = any(on <= t < (off if off is not None else float("inf")) for on, off in episodes)
        if flap and blocked:
            if flap_left == 0:
                flap_on, flap_left = not flap_on, rng.randint(1, 3)
            flap_left -= 1
            blocked = flap_on
        if outages and outage_left == 0 and rng.random() < outages:
            outage_left = rng.randint(1, 36)
        if outage_left:
            outage_left -= 1
            statuses.append("inconclusive")
        elif blocked:
            statuses.append("ok" if rng.random() < leak else "blocked")
        else:
            statuses.append("blocked" if rng.random() < noise else "ok")
    for start, length in gaps:
        for i in range(start, min(n, start + length)):
            statuses[i] = None
    return statuses, times


def _onset(rng: random.Random, index: int) -> float:
    """A true change time strictly inside the interval before measurement ``index``."""
    return T0 + (index - rng.uniform(0.01, 0.99)) * INTERVAL


def synthetic(trials: int, seed: int = 1) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for k in range(trials):
        noise = NOISE_LEVELS[k % len(NOISE_LEVELS)]
        warm = rng.randint(DAY, 2 * DAY)
        length = rng.randint(6, 48 * 12)  # 30 min to 2 days
        on = _onset(rng, warm)
        off = _onset(rng, warm + length)
        n = warm + length + DAY
        leak = rng.uniform(0.0, 0.05)
        # onset and lift
        st, ts = _timeline(rng, n, [(on, off)], noise, leak)
        cases.append(Case("step", _series(f"step{k}", st, ts), (Truth(on, off),)))
        # flapping: on/off runs of 1-3 measurements inside one episode
        st, ts = _timeline(rng, n, [(on, off)], noise, 0.0, flap=True)
        first = next(i for i, s in enumerate(st) if ts[i] >= on and s == "blocked")
        last = max(i for i, s in enumerate(st) if ts[i] < off and s == "blocked")
        truth = Truth(_onset(rng, first) if first != warm else on, ts[last] + INTERVAL / 2)
        cases.append(Case("flapping", _series(f"flap{k}", st, ts), (truth,)))
        # gaps: the probe is off for 1-24 h, away from the onset and lift
        glen = rng.randint(12, 12 * 20)
        gaps = [(rng.randint(0, warm - glen - 6), glen), (warm + length + 12, rng.randint(12, 200))]
        st, ts = _timeline(rng, n, [(on, off)], noise, leak, gaps=gaps)
        cases.append(Case("gaps", _series(f"gap{k}", st, ts), (Truth(on, off),)))
        # outages: the controls fail too, for 5 min to 3 h, about twice a day, also inside the episode
        st, ts = _timeline(rng, n, [(on, off)], noise, leak, outages=2.0 / DAY)
        for i in (warm, warm + length):  # keep the change itself observable
            st[i] = "blocked" if i == warm else "ok"
        cases.append(Case("outages", _series(f"out{k}", st, ts), (Truth(on, off),)))
        # several episodes, and one still ongoing at the end
        eps: list[tuple[float, float | None]] = []
        i = rng.randint(DAY // 2, DAY)
        for _ in range(rng.randint(2, 4)):
            dur = rng.randint(12, 12 * 12)
            eps.append((_onset(rng, i), _onset(rng, i + dur)))
            i += dur + rng.randint(24, 12 * 24)
        eps.append((_onset(rng, i), None))
        st, ts = _timeline(rng, i + rng.randint(12, 200), eps, noise, leak)
        cases.append(Case("multi+ongoing", _series(f"multi{k}", st, ts), tuple(Truth(a, b) for a, b in eps)))
    return cases


# -- lab timelines (the seed scenarios, replayed as series) -------------------------------

#: (scenario, [(phase seconds, {target: blocking})]) modelled on docs/scenarios.md's seeds.
BUILTIN_TIMELINES: list[tuple[str, list[tuple[float, float, dict[str, object]]]]] = [
    ("telegram-2018-ban", [
        (0, 15, {"web.telegram.test": False, "shop.cloud.test": False, "control.test": False}),
        (15, 40, {"web.telegram.test": "tcp_ip", "shop.cloud.test": False, "control.test": False}),
        (40, 70, {"web.telegram.test": "tcp_ip", "shop.cloud.test": "tcp_ip", "control.test": False}),
        (70, 90, {"web.telegram.test": "tcp_ip", "shop.cloud.test": False, "control.test": False}),
    ]),
    ("vpn-crackdown-payments", [
        (0, 20, {"pay.telegram.test": False, "media.telegram.test": False}),
        (20, 50, {"pay.telegram.test": "http-failure", "media.telegram.test": "throttling"}),
        (50, 80, {"pay.telegram.test": False, "media.telegram.test": "throttling"}),
    ]),
    ("moscow-throttling-channels", [
        (0, 20, {"web.telegram.test": False, "channels.test": False}),
        (20, 45, {"web.telegram.test": "throttling", "channels.test": "http-diff"}),
        (45, 70, {"web.telegram.test": False, "channels.test": "http-diff"}),
    ]),
    ("twitter-2021-sni-throttling", [
        (0, 20, {"twitter.test": False, "other-sni.test": False}),
        (20, 60, {"twitter.test": "throttling", "other-sni.test": False}),
        (60, 80, {"twitter.test": False, "other-sni.test": False}),
    ]),
]


def _seed_timelines() -> list[tuple[str, list[tuple[float, float, dict[str, object]]]]]:
    """The seeds in seeds/*.yaml when they load, else the built-in copies."""
    out = []
    try:
        from probe.lab.scenario import load

        for path in sorted((Path(__file__).resolve().parents[1] / "seeds").glob("*.yaml")):
            sc = load(path)
            out.append((sc.name, [(ph.onset, ph.lift, {t: e.blocking for t, e in ph.expect.items()})
                                  for ph in sc.phases]))
    except Exception:  # noqa: BLE001 - any trouble with the seeds: fall back to the built-ins
        out = []
    return out or BUILTIN_TIMELINES


def lab_cases(seed: int = 2, repeats: int = 20, scale: float = 2.0) -> list[Case]:
    """Each seed second is ``scale`` intervals, after a day of quiet; 2 % random tcp_ip failures."""
    from probe.events import event_type

    rng = random.Random(seed)
    cases: list[Case] = []
    for name, phases in _seed_timelines():
        for r in range(repeats):
            records: list[dict[str, object]] = []
            truths: dict[tuple[str, str], list[list[float | None]]] = {}
            offset = T0 + DAY * INTERVAL - rng.uniform(0, INTERVAL)
            end = offset + max(lift for _, lift, _ in phases) * scale * INTERVAL + 48 * INTERVAL
            targets = sorted({t for _, _, ex in phases for t in ex})
            for target in targets:
                for i in range(int((end - T0) / INTERVAL) + 12):
                    t = T0 + i * INTERVAL
                    rel = (t - offset) / (scale * INTERVAL)
                    expect: object = False
                    for onset, lift, ex in phases:
                        if onset <= rel < lift:
                            expect = ex.get(target, False)
                    if expect is False and rng.random() < 0.02:
                        expect = "tcp_ip"
                    records.append({"record_type": "verdict", "probe_id": "lab", "target": target,
                                    "service": name, "id": f"{name}-{r}-{target}-{i}",
                                    "measurement_start_time": format_time(t), "test_keys": {"blocking": expect}})
                prev: str | None = None
                for onset, lift, ex in phases:
                    kind = event_type(ex.get(target, False))
                    key = (target, kind or "")
                    t_on, t_off = offset + onset * scale * INTERVAL, offset + lift * scale * INTERVAL
                    if kind is not None and kind == prev:
                        truths[key][-1][1] = t_off
                    elif kind is not None:
                        truths.setdefault(key, []).append([t_on, t_off])
                    prev = kind
            for series in series_from_records(records):
                spans = truths.get((series.target, series.type), [])
                cases.append(Case(f"lab:{name}", series,
                                  tuple(Truth(float(a), b) for a, b in spans)))  # type: ignore[arg-type]
    return cases


# -- scoring ---------------------------------------------------------------------------


@dataclass
class Score:
    start_err: list[float]
    end_err: list[float]
    delay: list[float]
    delay_samples: list[float]
    missed: int = 0
    spurious: int = 0
    truths: int = 0
    covered: int = 0  # true onsets inside [start_low, start_high]


def _run_ours(series: Series, params: DetectParams) -> tuple[list[Event], list[float]]:
    det = Detector(series, params)
    fired: list[float] = []
    for p in ordered(series.points):
        before = det.n_events
        det.feed_many((p,))
        if det.n_events > before:
            fired.append(p.time)
    return det.events(), fired


def _run_anchor(series: Series, params: CusumParams) -> tuple[list[Event], list[float]]:
    events = cusum_detect(series, params)
    return events, [e.start_high for e in events]  # the anchor timestamps an onset when it detects it


Runner = Callable[[Series], tuple[list[Event], list[float]]]


def score(cases: Sequence[Case], run: Runner) -> Score:
    sc = Score([], [], [], [])
    for case in cases:
        events, fired = run(case.series)
        used: set[int] = set()
        bad_times = sorted(p.time for p in case.series.points if p.status == "blocked")
        for truth in case.truths:
            sc.truths += 1
            stop = truth.lift if truth.lift is not None else float("inf")
            best = None
            for j, e in enumerate(events):
                if j in used or not (truth.onset - 24 * INTERVAL <= e.start_time <= stop):
                    continue
                if best is None or abs(e.start_time - truth.onset) < abs(events[best].start_time - truth.onset):
                    best = j
            if best is None:
                sc.missed += 1
                continue
            used.add(best)
            e = events[best]
            sc.start_err.append(abs(e.start_time - truth.onset) / INTERVAL)
            sc.covered += e.start_low <= truth.onset <= e.start_high + 1e-6
            sc.delay.append((fired[best] - truth.onset) / INTERVAL)
            first_bad = next((t for t in bad_times if t >= truth.onset), fired[best])
            sc.delay_samples.append((fired[best] - first_bad) / INTERVAL)
            if truth.lift is not None and e.end_time is not None:
                sc.end_err.append(abs(e.end_time - truth.lift) / INTERVAL)
            elif (truth.lift is None) != (e.end_time is None):
                sc.end_err.append(float("inf"))
        sc.spurious += len(events) - len(used)
    return sc


def false_alarms(days: int, run: Runner, outages: float = 0.0, seed: int = 3) -> dict[str, float]:
    """Events per 1,000 target-days on series of pure noise (one 10-day series per 10 target-days)."""
    rng = random.Random(seed)
    per_level: dict[str, float] = {}
    total = 0
    span = 10
    for noise in NOISE_LEVELS:
        level_days = days // len(NOISE_LEVELS)
        count = 0
        for k in range(level_days // span):
            st, ts = _timeline(rng, span * DAY, [], noise, 0.0, outages=outages)
            count += len(run(_series(f"noise{k}", st, ts))[0])
        per_level[f"{noise:.0%}"] = 1000.0 * count / level_days
        total += count
    per_level["all"] = 1000.0 * total / (days // len(NOISE_LEVELS) * len(NOISE_LEVELS))
    return per_level


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary(sc: Score) -> dict[str, float]:
    return {
        "start_err_median": statistics.median(sc.start_err) if sc.start_err else float("nan"),
        "start_err_p95": _q(sc.start_err, 0.95), "start_err_max": max(sc.start_err, default=float("nan")),
        "end_err_median": statistics.median(sc.end_err) if sc.end_err else float("nan"),
        "end_err_p95": _q(sc.end_err, 0.95), "end_err_max": max(sc.end_err, default=float("nan")),
        "delay_median": statistics.median(sc.delay) if sc.delay else float("nan"),
        "delay_p95": _q(sc.delay, 0.95), "delay_max": max(sc.delay, default=float("nan")),
        "delay_samples_p95": _q(sc.delay_samples, 0.95), "delay_samples_max": max(sc.delay_samples, default=0.0),
        "missed": sc.missed, "spurious": sc.spurious, "truths": sc.truths,
        "onset_in_bounds": sc.covered / max(1, sc.truths - sc.missed),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=10_000, help="target-days of pure noise (>= 2,000)")
    ap.add_argument("--trials", type=int, default=200, help="synthetic series per family")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    began = time.monotonic()
    anchor: Runner = lambda s: _run_anchor(s, CusumParams())  # noqa: E731
    ours: Runner = lambda s: _run_ours(s, DetectParams())  # noqa: E731
    cases = synthetic(args.trials) + lab_cases()
    families = sorted({c.family.split(":")[0] for c in cases})
    out: dict[str, object] = {"interval_s": INTERVAL, "noise_target_days": args.days}
    print(f"interval {INTERVAL:.0f} s; {len(cases)} series with known episodes; {args.days} target-days of noise")
    print("errors and delays in probe intervals; FA = false alarms per 1,000 target-days")
    for name, run in (("anchor", anchor), ("ours", ours)):
        res: dict[str, object] = {}
        print(f"\n== {name} ({'cusum_detect' if name == 'anchor' else 'detect'})")
        print(f"{'family':15} {'start med/p95/max':>20} {'end med/p95/max':>22} {'delay med/p95/max':>20} "
              f"{'miss':>5} {'spur':>5} {'in-bounds':>9} {'after-1st-bad p95/max':>13}")
        for fam in [*families, "all"]:
            subset = [c for c in cases if fam == "all" or c.family.split(":")[0] == fam]
            s = summary(score(subset, run))
            res[fam] = s
            print(f"{fam:15} {s['start_err_median']:6.2f} {s['start_err_p95']:6.2f} {s['start_err_max']:6.2f} "
                  f"{s['end_err_median']:7.2f} {s['end_err_p95']:7.2f} {s['end_err_max']:7.2f} "
                  f"{s['delay_median']:6.2f} {s['delay_p95']:6.2f} {s['delay_max']:6.2f} "
                  f"{s['missed']:5d} {s['spurious']:5d} {s['onset_in_bounds']:9.2f} "
                  f"{s['delay_samples_p95']:6.1f} {s['delay_samples_max']:6.1f}")
        fa = false_alarms(args.days, run)
        fa_out = false_alarms(max(2000, args.days // 5), run, outages=2.0 / DAY, seed=4)
        res["false_alarms"], res["false_alarms_outages"] = fa, fa_out
        print("FA noise:         " + "  ".join(f"{k} {v:.2f}" for k, v in fa.items()))
        print("FA noise+outages: " + "  ".join(f"{k} {v:.2f}" for k, v in fa_out.items()))
        out[name] = res
    print(f"\nelapsed {time.monotonic() - began:.1f} s")
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
