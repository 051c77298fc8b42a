"""Accuracy of the event detectors on series with known truth (not a timed test).

Replays synthetic series (onsets and lifts, flapping, gaps, outages, several episodes, noise of
1-5 % random failures) and lab timelines modelled on the seed scenarios, through the anchor
(``probe.analysis.events.cusum_detect``), ours (``probe.analysis.events.detect``) and ours on the same series plus
the re-tests the daemon adds after each change (``probe.analysis.retest``: R re-tests ``spacing`` seconds
apart, drawn from the same truth and noise), and prints, per configuration:

* start and end timestamp errors, in probe intervals (median, p95, max);
* detection delay, in intervals from the true onset (and in intervals after the first bad measurement);
* missed and spurious events on the series with episodes;
* false alarms per 1,000 target-days of pure noise (and of noise with outages);
* the extra measurements the re-tests cost, per target-day;
* per scenario (a synthetic family; a lab timeline and blocking type): onset and end notice delays
  (p50, p95) and false events. The end of an intermittent (flapping) blocking is counted from when it
  is *clear*: its quiet has lasted as long as its longest pause (before that, no observer can tell the
  end from one more pause); its delay from the last blocked run is printed beside;

then the configurations side by side against the goals: the anchor, ours without re-tests, "before"
(main's policy and detector before the end-notice work of issue 14, class 6: the anchor of that change)
and ours with the policy simulated. The regular measurements are the same in every configuration
(re-tests draw from their own random stream), so the comparison is paired.

Deterministic (fixed seeds). ``--days`` sets the target-days of pure noise (default 10,000);
``--retests`` and ``--spacing`` the policy simulated (default: the daemon's defaults); ``--no-adaptive``
leaves out the adaptive interval's early regular runs (``probe.analysis.retest.Pacer``, the daemon's
``adaptive_interval``), so ``--retests 0 --no-adaptive`` is a daemon with neither.

    .venv/bin/python bench/events_accuracy.py [--days N] [--trials N] [--retests R] [--spacing S]
        [--no-adaptive] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.analysis.events import (  # noqa: E402
    CusumParams,
    Detector,
    DetectParams,
    Point,
    RecordDetector,
    Series,
    Status,
    cusum_detect,
    ordered,
    series_from_records,
)
from probe.analysis.retest import Adaptive, Asks, outcome_of, run_outcome, simulate  # noqa: E402
from probe.core.config import Settings  # noqa: E402
from probe.core.records import Event, format_time, mark_early, mark_retest, on_grid, retest_of  # noqa: E402

INTERVAL = 300.0
DAY = int(86400 / INTERVAL)  # 288 measurements a day
T0 = 1_700_000_000.0
NOISE_LEVELS = (0.01, 0.02, 0.03, 0.04, 0.05)
DEFAULTS = Settings()


@dataclass(frozen=True)
class Truth:
    onset: float
    lift: float | None  # None: still blocked at the end of the series
    #: an intermittent blocking: when its end became clear, the quiet having lasted as long as its longest
    #: pause (before that no observer can tell the end from one more pause); its end is noticed from here
    clear: float | None = None


@dataclass(frozen=True)
class Case:
    family: str
    series: Series
    truths: tuple[Truth, ...]
    noise: float = 0.02  # the random-failure rate outside the episodes


# -- series generation -----------------------------------------------------------------


@dataclass(frozen=True)
class Retests:
    """The policy simulated: ``count`` re-tests ``spacing`` seconds apart after each change."""

    count: int = DEFAULTS.retests
    spacing: float = DEFAULTS.retest_spacing
    unsettled: bool = True  # also re-test while the detector is unsettled (the daemon's second trigger)
    adaptive: bool = True  # early regular runs after a change or while undecided (settings.adaptive_interval)
    #: main's policy before the end-notice work (issue 14, class 6), the anchor: a lift test at lift_rate
    #: for every event, no pause guard, no early runs with re-tests on, early runs seen as re-tests
    legacy: bool = False

    def pacing(self) -> Adaptive | None:
        return Adaptive() if self.adaptive and not (self.legacy and self.count) else None

    def params(self) -> DetectParams:
        return LEGACY if self.legacy else DetectParams()


#: The detector of main before the end-notice work (the anchor of "old policy" figures).
LEGACY = DetectParams(steady_lift=False, pause_guard=False)
Unsettled = Callable[[float, Any, bool, bool], Asks]


def _unsettled_series(name: str, policy: Retests) -> Unsettled | None:
    """The daemon's second trigger on one tcp_ip series: a detector fed every observation."""
    if not policy.unsettled:
        return None
    det, n = Detector(Series("bench", name, "svc", "tcp", "tcp_ip"), policy.params()), itertools.count()

    def feed(t: float, status: Status, grid: bool, retest: bool) -> Asks:
        det.take(Point(t, f"u{next(n)}", status, grid))
        return Asks(det.unsettled, det.unsettled, not policy.legacy and det.n_events > det.n_closed)

    return feed


def _unsettled_records(target: str, policy: Retests) -> Unsettled | None:
    """The daemon's second trigger on one target's verdicts (its RecordDetector)."""
    if not policy.unsettled:
        return None
    det, n = RecordDetector(policy.params()), itertools.count()

    def feed(t: float, blocking: object, grid: bool, retest: bool) -> Asks:
        record: dict[str, object] = {"record_type": "verdict", "probe_id": "lab", "target": target, "id": f"u{next(n)}",
                                     "measurement_start_time": format_time(t), "test_keys": {"blocking": blocking}}
        det.feed(mark_retest([record], "u", 1) if retest or (policy.legacy and not grid)
                 else [record] if grid else mark_early([record]))
        if policy.legacy:
            return Asks(det.unsettled(target), det.unsettled(target))
        paced = False if policy.count else None
        return Asks(det.unsettled(target), det.unsettled(target, paced), det.ongoing(target, paced))

    return feed


def _blocked(episodes: Sequence[tuple[float, float | None]], t: float) -> bool:
    return any(on <= t < (off if off is not None else float("inf")) for on, off in episodes)


@dataclass(frozen=True)
class World:
    """The truth behind a timeline: the episodes, the noise, and what held during the interval after
    each measurement (an outage; the off phase of a flapping blocking). Re-tests are drawn from it."""

    episodes: Sequence[tuple[float, float | None]]
    noise: float
    leak: float
    outage: list[bool]
    flap_off: list[bool]

    def draw(self, rng: random.Random, i: int, t: float) -> Status:
        """One measurement at time t, inside the interval after measurement i."""
        if self.outage[i]:
            return "inconclusive"
        if _blocked(self.episodes, t) and not self.flap_off[i]:
            return "ok" if rng.random() < self.leak else "blocked"
        return "blocked" if rng.random() < self.noise else "ok"


def _outcome(status: Status) -> str | None:
    return None if status == "inconclusive" else status


def _series(name: str, statuses: Sequence[Status | None], times: Sequence[float], world: World | None = None,
            retests: Retests | None = None) -> Series:
    """The regular measurements (None: none at that time), plus the re-tests of ``retests`` drawn from
    ``world`` with their own random stream (so the regular ones are the same with or without)."""
    regular = [(t, s) for t, s in zip(times, statuses, strict=True) if s is not None]
    index = {t: i for i, t in enumerate(times)}
    if world is None or retests is None:
        points = tuple(Point(t, f"{name}-{index[t]}", s) for t, s in regular)
        return Series("bench", name, "svc", "tcp", "tcp_ip", points)
    rng = random.Random(name)
    observed = simulate(regular, lambda t0, t: world.draw(rng, index[t0], t), _outcome, retests.count,
                        retests.spacing, _unsettled_series(name, retests), retests.pacing(), INTERVAL)
    tested: list[Point] = []
    last, early = 0, 0
    for t, status, k in observed:
        early = 0 if t in index else early + (k == 0)  # an early regular run is not on the grid
        last = index.get(t, last) if k == 0 else last
        tested.append(Point(t, f"{name}-{last}" + (f"e{early}" if early else "") + (f"r{k}" if k else ""),
                            status, k == 0 and not early))
    return Series("bench", name, "svc", "tcp", "tcp_ip", tuple(tested))


def _timeline(
    rng: random.Random, n: int, episodes: Sequence[tuple[float, float | None]], noise: float, leak: float,
    outages: float = 0.0, flap: bool = False, gaps: Sequence[tuple[int, int]] = (),
) -> tuple[list[Status | None], list[float], World]:
    """Statuses at t = T0 + i * INTERVAL; episodes are (onset, lift) times; None = no measurement."""
    times = [T0 + i * INTERVAL for i in range(n)]
    world = World(episodes, noise, leak, [], [])
    statuses: list[Status | None] = []
    outage_left = 0
    flap_on, flap_left = True, 0
    for i, t in enumerate(times):
        if flap and _blocked(episodes, t):
            if flap_left == 0:
                flap_on, flap_left = not flap_on, rng.randint(1, 3)
            flap_left -= 1
        world.flap_off.append(flap and _blocked(episodes, t) and not flap_on)
        if outages and outage_left == 0 and rng.random() < outages:
            outage_left = rng.randint(1, 36)
        world.outage.append(outage_left > 0)
        outage_left = max(0, outage_left - 1)
        statuses.append(world.draw(rng, i, t))
    for start, length in gaps:
        for i in range(start, min(n, start + length)):
            statuses[i] = None
    return statuses, times, world


def _onset(rng: random.Random, index: int) -> float:
    """A true change time strictly inside the interval before measurement ``index``."""
    return T0 + (index - rng.uniform(0.01, 0.99)) * INTERVAL


def synthetic(trials: int, seed: int = 1, retests: Retests | None = None) -> list[Case]:
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
        st, ts, world = _timeline(rng, n, [(on, off)], noise, leak)
        cases.append(Case("step", _series(f"step{k}", st, ts, world, retests), (Truth(on, off),), noise))
        # flapping: on/off runs of 1-3 measurements inside one episode (a re-test sees its interval's phase)
        st, ts, world = _timeline(rng, n, [(on, off)], noise, 0.0, flap=True)
        first = next(i for i, s in enumerate(st) if ts[i] >= on and s == "blocked")
        last = max(i for i, s in enumerate(st) if ts[i] < off and s == "blocked")
        pause = max((len(list(run)) for off_phase, run in itertools.groupby(world.flap_off[first:last + 1])
                     if off_phase), default=0)
        truth = Truth(_onset(rng, first) if first != warm else on, ts[last] + INTERVAL / 2,
                      ts[last] + (pause + 1) * INTERVAL)
        cases.append(Case("flapping", _series(f"flap{k}", st, ts, world, retests), (truth,), noise))
        # gaps: the probe is off for 1-24 h, away from the onset and lift
        glen = rng.randint(12, 12 * 20)
        gaps = [(rng.randint(0, warm - glen - 6), glen), (warm + length + 12, rng.randint(12, 200))]
        st, ts, world = _timeline(rng, n, [(on, off)], noise, leak, gaps=gaps)
        cases.append(Case("gaps", _series(f"gap{k}", st, ts, world, retests), (Truth(on, off),), noise))
        # outages: the controls fail too, for 5 min to 3 h, about twice a day, also inside the episode
        st, ts, world = _timeline(rng, n, [(on, off)], noise, leak, outages=2.0 / DAY)
        for i in (warm, warm + length):  # keep the change itself observable
            st[i] = "blocked" if i == warm else "ok"
            world.outage[i] = False
        cases.append(Case("outages", _series(f"out{k}", st, ts, world, retests), (Truth(on, off),), noise))
        # several episodes, and one still ongoing at the end
        eps: list[tuple[float, float | None]] = []
        i = rng.randint(DAY // 2, DAY)
        for _ in range(rng.randint(2, 4)):
            dur = rng.randint(12, 12 * 12)
            eps.append((_onset(rng, i), _onset(rng, i + dur)))
            i += dur + rng.randint(24, 12 * 24)
        eps.append((_onset(rng, i), None))
        st, ts, world = _timeline(rng, i + rng.randint(12, 200), eps, noise, leak)
        cases.append(Case("multi+ongoing", _series(f"multi{k}", st, ts, world, retests),
                          tuple(Truth(a, b) for a, b in eps), noise))
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


def _seed_timelines() -> list[tuple[str, Phases]]:
    """The seeds in seeds/*.yaml when they load, else the built-in copies."""
    out: list[tuple[str, Phases]] = []
    try:
        from probe.lab.scenario import load

        for path in sorted((Path(__file__).resolve().parents[1] / "seeds").glob("*.yaml")):
            sc = load(path)
            out.append((sc.name, [(ph.onset, ph.lift, {t: e.blocking for t, e in ph.expect.items()})
                                  for ph in sc.phases]))
    except Exception:  # noqa: BLE001 - any trouble with the seeds: fall back to the built-ins
        out = []
    return out or BUILTIN_TIMELINES


Phases = list[tuple[float, float, dict[str, object]]]


def _lab_records(rng: random.Random, name: str, target: str, phases: Phases, times: Sequence[float],
                 offset: float, scale: float, retests: Retests | None) -> list[dict[str, object]]:
    """One target's verdict records: its regular runs, with 2 % random tcp_ip failures where the phase
    says nothing, and (``retests``) the re-tests of each change, marked like the daemon's. A re-test
    runs no throughput check: it sees what ``probe.analysis.retest.outcome_of`` sees (throttling is "ok")."""

    def expected(t: float) -> object:
        found: object = False
        for onset, lift, ex in phases:
            if onset <= (t - offset) / (scale * INTERVAL) < lift:
                found = ex.get(target, False)
        return found

    def noisy(blocking: object, draw: random.Random) -> object:
        return "tcp_ip" if blocking is False and draw.random() < 0.02 else blocking

    regular = [(t, noisy(expected(t), rng)) for t in times]
    observed = [(t, b, 0) for t, b in regular]
    if retests is not None:
        again = random.Random(f"{name}-{target}-{times[0]}")

        def retest(_: float, t: float) -> object:
            return noisy(False if outcome_of(expected(t)) == "ok" else expected(t), again)

        def full(_: float, t: float) -> object:  # an early run is a full run: it sees throttling
            return noisy(expected(t), again)

        observed = simulate(regular, retest, outcome_of, retests.count, retests.spacing,
                            _unsettled_records(target, retests), retests.pacing(), INTERVAL,
                            run=None if retests.legacy else (full, run_outcome))
    records: list[dict[str, object]] = []
    of = ""
    for t, blocking, k in observed:
        slot = (t - T0) / INTERVAL
        rid = f"{name}-{target}-{round(slot)}" + ("" if slot == round(slot) else f"e{t - T0:.0f}")
        rid = rid if k == 0 else f"{of}r{k}"
        record: dict[str, object] = {"record_type": "verdict", "probe_id": "lab", "target": target, "service": name,
                                     "id": rid, "measurement_start_time": format_time(t),
                                     "test_keys": {"blocking": blocking}}
        if k:
            records += mark_retest([record], of, k)
        else:
            records += [record] if slot == round(slot) else mark_early([record])
        of = rid if k == 0 else of
    return records


def lab_cases(seed: int = 2, repeats: int = 20, scale: float = 2.0, retests: Retests | None = None,
              cost: Counter[str] | None = None) -> list[Case]:
    """Each seed second is ``scale`` intervals, after a day of quiet; 2 % random tcp_ip failures. ``cost``
    counts the runs: regular (on the grid), early (full runs of the adaptive interval) and re-tests."""
    from probe.analysis.events import event_type

    rng = random.Random(seed)
    cases: list[Case] = []
    for name, phases in _seed_timelines():
        for r in range(repeats):
            records: list[dict[str, object]] = []
            truths: dict[tuple[str, str], list[list[float | None]]] = {}
            offset = T0 + DAY * INTERVAL - rng.uniform(0, INTERVAL)
            end = offset + max(lift for _, lift, _ in phases) * scale * INTERVAL + 48 * INTERVAL
            times = [T0 + i * INTERVAL for i in range(int((end - T0) / INTERVAL) + 12)]
            for target in sorted({t for _, _, ex in phases for t in ex}):
                runs = _lab_records(rng, f"{name}-{r}", target, phases, times, offset, scale, retests)
                records += runs
                if cost is not None:
                    cost.update("retest" if retest_of(x) else "regular" if on_grid(x) else "early" for x in runs)
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
    end_delay: list[float] = dataclasses.field(default_factory=list)  # the lift noticed, from the true lift
    end_delay_lift: list[float] = dataclasses.field(default_factory=list)  # ... from the lift (not when clear)
    missed: int = 0
    spurious: int = 0
    truths: int = 0
    covered: int = 0  # true onsets inside [start_low, start_high]


def _run_ours(series: Series, params: DetectParams) -> Found:
    det = Detector(series, params)
    fired: list[float] = []
    closed: list[float | None] = []
    for p in ordered(series.points):
        before, ended = det.n_events, det.n_closed
        det.feed_many((p,))
        if det.n_closed > ended:
            closed[ended] = p.time
        if det.n_events > before:
            fired.append(p.time)
            closed.append(None)
    return det.events(), fired, closed


def _run_anchor(series: Series, params: CusumParams) -> Found:
    events = cusum_detect(series, params)
    # the anchor timestamps an onset (a lift) when it detects it
    return events, [e.start_high for e in events], [e.end_high for e in events]


Runner = Callable[[Series], "Found"]


#: A runner's answer: the events, when each was first reported, and when each was reported ended.
Found = tuple[list[Event], list[float], list[float | None]]


def score(found: Sequence[tuple[Case, Found]]) -> Score:
    sc = Score([], [], [], [])
    for case, (events, fired, closed) in found:
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
                noticed = closed[best]
                if noticed is not None:
                    sc.end_delay.append((noticed - (truth.clear or truth.lift)) / INTERVAL)
                    sc.end_delay_lift.append((noticed - truth.lift) / INTERVAL)
            elif (truth.lift is None) != (e.end_time is None):
                sc.end_err.append(float("inf"))
        sc.spurious += len(events) - len(used)
    return sc


def false_alarms(days: int, run: Runner, outages: float = 0.0, seed: int = 3,
                 retests: Retests | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Events per 1,000 target-days on series of pure noise (one 10-day series per 10 target-days),
    and the re-tests per target-day they cost, per noise level and over all."""
    rng = random.Random(seed)
    per_level: dict[str, float] = {}
    extra: dict[str, float] = {}
    total = total_extra = 0
    span = 10
    level_days = days // len(NOISE_LEVELS)
    for noise in NOISE_LEVELS:
        count = added = 0
        for k in range(level_days // span):
            st, ts, world = _timeline(rng, span * DAY, [], noise, 0.0, outages=outages)
            series = _series(f"{'out' if outages else 'noise'}{noise:.2f}-{k}", st, ts, world, retests)
            count += len(run(series)[0])
            added += len(series.points) - sum(s is not None for s in st)
        per_level[f"{noise:.0%}"] = 1000.0 * count / level_days
        extra[f"{noise:.0%}"] = added / level_days
        total, total_extra = total + count, total_extra + added
    per_level["all"] = 1000.0 * total / (level_days * len(NOISE_LEVELS))
    extra["all"] = total_extra / (level_days * len(NOISE_LEVELS))
    return per_level, extra


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
        "end_delay_median": statistics.median(sc.end_delay) if sc.end_delay else float("nan"),
        "end_delay_p95": _q(sc.end_delay, 0.95), "end_delay_max": max(sc.end_delay, default=float("nan")),
        "end_delay_lift_median": statistics.median(sc.end_delay_lift) if sc.end_delay_lift else float("nan"),
        "end_delay_lift_p95": _q(sc.end_delay_lift, 0.95), "ends": len(sc.end_delay),
        "missed": sc.missed, "spurious": sc.spurious, "truths": sc.truths,
        "onset_in_bounds": sc.covered / max(1, sc.truths - sc.missed),
    }


#: Families whose onsets the probe can observe when they happen (no outage or flapping in the way).
CLEAN = ("step", "gaps", "multi+ongoing", "lab")
GOAL_DELAY, GOAL_ERROR, GOAL_FA = 3.0, 1.0, 1.0
ASSUMPTION = ("assumption: the synthetic noise is independent between measurements, re-tests included; a "
              "transient failure lasting longer than the spacing would correlate a change and its re-tests, "
              "and the re-tests would then confirm noise (more false alarms than shown here)")


def _family(case: Case) -> str:
    return case.family.split(":")[0]


def _scenario(case: Case) -> str:
    """A synthetic family, or a lab timeline and the blocking type of its series."""
    return f"{case.family}/{case.series.type}" if case.family.startswith("lab") else case.family


def by_scenario(found: Sequence[tuple[Case, Found]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Onset and end notice delays and false events per scenario (lab: per timeline and type), and the table."""
    res: dict[str, dict[str, float]] = {}
    lines = [f"{'scenario':52} {'onset p50':>9} {'p95':>6} {'end p50':>8} {'p95':>6} {'ends':>5} "
             f"{'miss':>5} {'false':>5}   (end of flapping: from when it is clear; [from the lift p50/p95])"]
    for name in sorted({_scenario(c) for c, _ in found}):
        s = res[name] = summary(score([(c, f) for c, f in found if _scenario(c) == name]))
        lift = (f"   [{s['end_delay_lift_median']:.2f} / {s['end_delay_lift_p95']:.2f}]"
                if s["end_delay_lift_p95"] != s["end_delay_p95"] else "")
        lines.append(f"{name:52} {s['delay_median']:9.2f} {s['delay_p95']:6.2f} {s['end_delay_median']:8.2f} "
                     f"{s['end_delay_p95']:6.2f} {s['ends']:5.0f} {s['missed']:5.0f} {s['spurious']:5.0f}{lift}")
    return res, lines


def _row(fam: str, s: dict[str, float]) -> str:
    return (f"{fam:15} {s['start_err_median']:6.2f} {s['start_err_p95']:6.2f} {s['start_err_max']:6.2f} "
            f"{s['end_err_median']:7.2f} {s['end_err_p95']:7.2f} {s['end_err_max']:7.2f} "
            f"{s['delay_median']:6.2f} {s['delay_p95']:6.2f} {s['delay_max']:6.2f} "
            f"{s['missed']:5d} {s['spurious']:5d} {s['onset_in_bounds']:9.2f} "
            f"{s['delay_samples_p95']:6.1f} {s['delay_samples_max']:6.1f} "
            f"{s['end_delay_median']:6.2f} {s['end_delay_p95']:6.2f} {s['end_delay_max']:6.2f}")


def evaluate(run: Runner, cases: Sequence[Case], days: int, retests: Retests | None) -> dict[str, Any]:
    """Every figure of one configuration, printing its per-family table."""
    found = [(c, run(c.series)) for c in cases]
    res: dict[str, Any] = {}
    print(f"{'family':15} {'start med/p95/max':>20} {'end med/p95/max':>22} {'delay med/p95/max':>20} "
          f"{'miss':>5} {'spur':>5} {'in-bounds':>9} {'after-1st-bad p95/max':>13} {'end noticed med/p95/max':>20}")
    for fam in [*sorted({_family(c) for c in cases}), "all"]:
        res[fam] = summary(score([(c, f) for c, f in found if fam in ("all", _family(c))]))
        print(_row(fam, res[fam]))
    res["by_scenario"], table = by_scenario(found)
    print("\n".join(table))
    res["clean"] = summary(score([(c, f) for c, f in found if _family(c) in CLEAN]))
    res["delay_by_noise"] = {f"{n:.0%}": summary(score([(c, f) for c, f in found if _family(c) in CLEAN[:3]
                                                        and c.noise == n])) for n in NOISE_LEVELS}
    res["false_alarms"], res["extra_noise"] = false_alarms(days, run, retests=retests)
    res["false_alarms_outages"], res["extra_outages"] = false_alarms(
        max(2000, days // 5), run, outages=2.0 / DAY, seed=4, retests=retests)
    print("FA noise:         " + "  ".join(f"{k} {v:.2f}" for k, v in res["false_alarms"].items()))
    print("FA noise+outages: " + "  ".join(f"{k} {v:.2f}" for k, v in res["false_alarms_outages"].items()))
    return res


def side_by_side(results: dict[str, dict[str, Any]]) -> list[str]:
    """The configurations against the goals, one figure per row."""
    names = list(results)
    lines = [f"{'':50}" + "".join(f"{n:>14}" for n in names) + "   goal"]

    def row(label: str, pick: Callable[[dict[str, Any]], float], goal: str = "", fmt: str = "14.2f") -> None:
        lines.append(f"{label:50}" + "".join(f"{pick(results[n]):{fmt}}" for n in names) + f"   {goal}")

    def fig(*keys: str) -> Callable[[dict[str, Any]], float]:
        def pick(r: dict[str, Any]) -> float:
            value: Any = r
            for key in keys:
                value = value[key]
            return float(value)

        return pick

    for key, label in (("start_err", "start"), ("end_err", "end")):
        row(f"{label} error median, all families (intervals)", fig("all", f"{key}_median"), f"<= {GOAL_ERROR:g}")
        row(f"{label} error p95, all families", fig("all", f"{key}_p95"))
    row("onset inside [start_low, start_high], all", fig("all", "onset_in_bounds"))
    row("delay from true onset median, clean (intervals)", fig("clean", "delay_median"))
    row("delay from true onset p95, clean", fig("clean", "delay_p95"), f"<= {GOAL_DELAY:g}")
    for level in NOISE_LEVELS:
        row(f"  p95 at {level:.0%} noise (step, gaps, multi)", fig("delay_by_noise", f"{level:.0%}", "delay_p95"),
            f"<= {GOAL_DELAY:g}")
    row("end noticed after true lift median, clean (intervals)", fig("clean", "end_delay_median"))
    row("end noticed after true lift p95, clean", fig("clean", "end_delay_p95"), f"<= {GOAL_DELAY:g}")
    row("  p95 of throttling series (lab timelines)", lambda r: _q([v for k, v in _ends(r).items() if "throttl" in k],
                                                                   1.0))
    row("end noticed p95, flapping (from when it is clear)", fig("flapping", "end_delay_p95"))
    row("end noticed p95, flapping (from the last blocked run)", fig("flapping", "end_delay_lift_p95"))
    row("end noticed p95, outages (after the lift)", fig("outages", "end_delay_p95"))
    row("delay from true onset median, all families", fig("all", "delay_median"))
    row("delay from true onset p95, all (outages, flapping)", fig("all", "delay_p95"))
    row("missed events, all", fig("all", "missed"), fmt="14.0f")
    row("spurious events, all", fig("all", "spurious"), fmt="14.0f")
    for key in [f"{n:.0%}" for n in NOISE_LEVELS] + ["all"]:
        row(f"FA / 1,000 target-days, noise {key}", fig("false_alarms", key), f"<= {GOAL_FA:g}" if key == "all" else "")
    row("FA / 1,000 target-days, noise + outages", fig("false_alarms_outages", "all"), f"<= {GOAL_FA:g}")
    for key in [f"{n:.0%}" for n in NOISE_LEVELS] + ["all"]:
        row(f"extra measurements / target-day, noise {key}", fig("extra_noise", key), fmt="14.1f")
    row("extra measurements / target-day, noise + outages", fig("extra_outages", "all"), fmt="14.1f")
    row("extra measurements / target-day, with episodes", fig("extra_episodes"), fmt="14.1f")
    row("lab timelines: early full runs / target-day", fig("lab_early"), fmt="14.1f")
    row("lab timelines: re-tests / target-day", fig("lab_retests"), fmt="14.1f")
    return lines


def _ends(r: dict[str, Any]) -> dict[str, float]:
    """The end-notice p95 of each scenario (the worst of them, for throttling)."""
    return {k: float(v["end_delay_p95"]) for k, v in r["by_scenario"].items()}


def meets_goals(r: dict[str, Any]) -> bool:
    return bool(r["all"]["start_err_median"] <= GOAL_ERROR and r["all"]["end_err_median"] <= GOAL_ERROR
            and max(r["clean"]["delay_p95"], *(d["delay_p95"] for d in r["delay_by_noise"].values())) <= GOAL_DELAY
            and r["clean"]["end_delay_p95"] <= GOAL_DELAY
            and r["false_alarms"]["all"] <= GOAL_FA
            and r["false_alarms_outages"]["all"] <= GOAL_FA)


def _extra(plain: Sequence[Case], tested: Sequence[Case]) -> float:
    """Extra measurements per target-day on the synthetic series with episodes."""
    pairs = [(len(a.series.points), len(b.series.points)) for a, b in zip(plain, tested, strict=True)
             if not a.family.startswith("lab")]
    return sum(b - a for a, b in pairs) / (sum(a for a, _ in pairs) / DAY)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=10_000, help="target-days of pure noise (>= 2,000)")
    ap.add_argument("--trials", type=int, default=200, help="synthetic series per family")
    ap.add_argument("--retests", type=int, default=DEFAULTS.retests, help="re-tests after a change (simulated)")
    ap.add_argument("--spacing", type=float, default=DEFAULTS.retest_spacing, help="seconds between re-tests")
    ap.add_argument("--changes-only", action="store_true",
                    help="re-test after a change only (the policy before the unsettled trigger)")
    ap.add_argument("--no-adaptive", action="store_true",
                    help="no early regular runs (the adaptive interval off: settings.adaptive_interval false)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    began = time.monotonic()
    policy = Retests(args.retests, args.spacing, not args.changes_only, not args.no_adaptive)
    before = dataclasses.replace(policy, legacy=True)
    anchor: Runner = lambda s: _run_anchor(s, CusumParams())  # noqa: E731
    ours: Runner = lambda s: _run_ours(s, DetectParams())  # noqa: E731
    legacy: Runner = lambda s: _run_ours(s, LEGACY)  # noqa: E731
    plain = synthetic(args.trials) + lab_cases()
    print(f"interval {INTERVAL:.0f} s; {len(plain)} series with known episodes; {args.days} target-days of noise")
    print(f"re-tests: {policy.count}, {policy.spacing:g} s apart, after each change of outcome (not after a re-test)"
          + (" and after a regular run that leaves the detector unsettled" if policy.unsettled else "")
          + ("; adaptive interval: early regular runs after a change or while undecided" if policy.adaptive else ""))
    print("before = main's policy and detector before the end-notice work (issue 14, class 6): the anchor of the "
          "change; ours+retests = now")
    print(ASSUMPTION)
    print("errors and delays in probe intervals (of wall time); FA = false alarms per 1,000 target-days")
    out: dict[str, Any] = {"interval_s": INTERVAL, "noise_target_days": args.days, "retests": policy.count,
                           "retest_spacing_s": policy.spacing, "adaptive": policy.adaptive}
    results: dict[str, dict[str, Any]] = {}
    for name, label, run, retests in (
        ("anchor", "cusum_detect", anchor, None),
        ("ours", "detect, no re-tests", ours, None),
        ("before", f"main's policy before, {policy.count} re-tests {policy.spacing:g} s apart", legacy, before),
        ("ours+retests", f"detect, {policy.count} re-tests {policy.spacing:g} s apart after a change", ours, policy),
    ):
        cost: Counter[str] = Counter()
        cases = plain if retests is None else synthetic(args.trials, retests=retests) + lab_cases(retests=retests,
                                                                                                 cost=cost)
        print(f"\n== {name} ({label})")
        per_day = DAY / max(1, cost["regular"])
        results[name] = {**evaluate(run, cases, args.days, retests), "extra_episodes": _extra(plain, cases),
                         "lab_early": cost["early"] * per_day, "lab_retests": cost["retest"] * per_day}
    print(f"\n== side by side: anchor / ours without re-tests / before / ours with re-tests "
          f"({policy.count} x {policy.spacing:g} s)")
    print("\n".join(side_by_side(results)))
    print("meets every goal: " + "  ".join(f"{n} {'yes' if meets_goals(r) else 'no'}" for n, r in results.items()))
    print(ASSUMPTION)
    print(f"\nelapsed {time.monotonic() - began:.1f} s")
    if args.json:
        out.update(results)
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
