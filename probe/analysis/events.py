"""Blocking and throttling events: one measurement series in, timestamped episodes out.

Pure: no I/O, no clock. A *series* is one per (probe, target, check kind,
blocking type); each point is one verdict seen from that blocking type:
``blocked`` (the verdict names this type), ``ok`` (this type was measured and
passed) or ``inconclusive`` (the probe's controls failed too: an outage).

Two detectors, over the same series (docs/design/events.md explains both and
gives their measured accuracy):

* :func:`cusum_detect` is the anchor, ooni/data's two-sided CUSUM with state and
  hysteresis (mu0 = 0, mu1 = 0.7, h = 3.5, gap decay). It has no controls, so an
  outage looks like a failure, and it timestamps a change when it *detects* it.
* :func:`detect` is a Bernoulli log-likelihood-ratio CUSUM. Inconclusive points
  carry no evidence either way. The false-failure rate of each series is
  estimated from its own quiet periods, so a quiet series alarms after three
  blocked measurements and a noisy one waits longer, at the same false-alarm
  rate. When it fires, it looks back to where the evidence began and bounds the
  onset between the last good and the first bad measurement (the lift likewise).

:class:`Detector` is the incremental form of :func:`detect`, for the daemon:
feed points in time order and read the current events (the last may be ongoing).
``detect`` is that class fed the sorted series, so the two cannot disagree.

Re-tests (:mod:`probe.analysis.retest`: quick re-measurements after a change) are points like any
other, at their own times; nothing here assumes regular spacing. A re-test runs no throughput
check, so it is inconclusive for the throttling series (:func:`point_status`).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from probe.analysis.retest import SKIPPED_CHECKS
from probe.core.records import Event, on_grid, parse_time, retest_of

Status = Literal["blocked", "ok", "inconclusive"]

#: Verdict ``blocking`` values -> event type (the rest keep their own name).
EVENT_TYPE: Mapping[str, str] = {
    "dns": "dns",
    "tcp_ip": "tcp_ip",
    "tls": "tls",
    "http-failure": "http",
    "http-diff": "http",
    "origin-withheld": "origin-withheld",  # the origin, not the network: its own series
    "quic": "quic",
    "throttling": "throttling",
}
#: Event type -> the check kind whose failure it is.
CHECK_OF_TYPE: Mapping[str, str] = {
    "dns": "dns", "tcp_ip": "tcp", "tls": "tls", "http": "http", "quic": "quic", "throttling": "throughput",
    "origin-withheld": "http",
}
#: Order of the pipeline's steps: a blocking at a later step means the earlier steps passed.
_STAGE: Mapping[str, int] = {"dns": 0, "tcp_ip": 1, "tls": 2, "http": 3, "origin-withheld": 3, "quic": 4,
                             "throttling": 5}


@dataclass(frozen=True)
class Point:
    """One verdict seen from one blocking type."""

    time: float
    id: str
    status: Status
    regular: bool = True  # False for a re-test or an early run (probe.analysis.retest): off the grid


@dataclass(frozen=True)
class Series:
    """The points of one (probe, target, check kind, blocking type), in any order."""

    probe_id: str
    target: str
    service: str
    check: str
    type: str
    points: tuple[Point, ...] = ()


@dataclass(frozen=True)
class CusumParams:
    """The anchor's parameters (ooni/data ``CusumDetector`` with edd = 10: h = edd * (mu1 - mu0) / 2)."""

    mu0: float = 0.0
    mu1: float = 0.7
    h: float = 3.5
    gap_seconds: float = 24 * 3600.0  # decay only after a silence longer than this
    halflife_seconds: float = 48 * 3600.0  # the accumulators halve after this much silence
    evidence_cap: int = 50


@dataclass(frozen=True)
class DetectParams:
    """Parameters of :func:`detect` (tuned with bench/events_accuracy.py).

    ``block_rate``: the share of blocked verdicts while a blocking is in force (the onset test).
    ``lift_rate``: the lift test of an event that is not steady asks "back to noise" against "still
    blocked at least this often", so intermittent (flapping) blocking stays one event. A *steady* event
    (``steady_min`` blocked grid runs, ``steady_share`` of its points blocked) is asked "back to noise"
    against "still blocked as often as it was" (its own share, at most ``block_rate``: ``steady_lift``),
    so 4 good points end it, as 3-5 bad ones start one. ``pause_guard``: an event that is not steady and
    has paused (good points, then blocked ones: a lone blocked point refuted by a re-test does not end a pause)
    ends only once the quiet has lasted longer than its longest pause P, times 1 + ``pause_margin`` / n
    after n pauses (the next pause is longer than all n before it with odds 1 / (n + 1)).
    ``h_on`` / ``h_off``: thresholds, in nats of evidence, to declare an onset / a lift.
    ``noise_prior`` / ``prior_weight``: the assumed false-failure rate of a new series, and how
    many measurements that assumption weighs. ``noise_min`` / ``noise_max`` clip the estimate:
    the floor keeps a spotless history from making two failures an event. ``memory``: measurements
    after which old quiet-period evidence has faded to 1/e.
    """

    block_rate: float = 0.9
    lift_rate: float = 0.5
    steady_share: float = 0.85  # an event this share blocked (or more) is steady: re-test its lift
    steady_min: int = 4  # ... blocked at this many regular runs or more (a flapping phase: 1-3)
    steady_lift: bool = True  # a steady event's lift test uses its own blocked share (False: lift_rate, as before)
    pause_guard: bool = True  # an intermittent event ends only once the quiet outlasts its longest pause...
    pause_margin: float = 2.0  # ... by this many times over the number of pauses seen (few seen: wider)
    h_on: float = 12.5
    h_off: float = 8.0
    h_off_steady: float = 9.5  # a steady event's lift: 5 good points (4 gave one false lift in the bench)
    noise_prior: float = 0.03
    prior_weight: float = 100.0
    noise_min: float = 0.01
    noise_max: float = 0.2
    memory: float = 2000.0
    gap_seconds: float = 3600.0
    halflife_seconds: float = 6 * 3600.0
    evidence_cap: int = 50

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_min <= self.noise_max < min(self.block_rate, self.lift_rate) <= 1.0 - 1e-9:
            raise ValueError("need 0 < noise_min <= noise_max < block_rate, lift_rate < 1")
        if self.h_on <= 0 or self.h_off <= 0 or self.memory <= 1 or self.evidence_cap < 1:
            raise ValueError("thresholds, memory and evidence_cap must be positive")


# -- building series from verdict records ------------------------------------------------


def event_type(blocking: object) -> str | None:
    """The event type of a verdict's ``blocking`` value; None when it names no blocking."""
    if not isinstance(blocking, str) or not blocking:
        return None
    return EVENT_TYPE.get(blocking, blocking)


def status_for(series_type: str, blocking: object) -> Status:
    """What one verdict says about one blocking type.

    ``False`` is ok and ``None`` inconclusive. Another blocking type is ok for the steps
    before it (the pipeline got past them) and inconclusive for the steps after it
    (they never ran); between types outside the pipeline order it says nothing.
    """
    if blocking is False:
        return "ok"
    kind = event_type(blocking)
    if kind is None:
        return "inconclusive"
    if kind == series_type:
        return "blocked"
    if kind in _STAGE and series_type in _STAGE and _STAGE[kind] > _STAGE[series_type]:
        return "ok"
    return "inconclusive"


def point_status(series_type: str, blocking: object, retest: bool = False) -> Status:
    """What one verdict says about one blocking type, :func:`status_for`, except that a re-test
    says nothing about the types of the families it does not run (throttling)."""
    if retest and CHECK_OF_TYPE.get(series_type, series_type) in SKIPPED_CHECKS:
        return "inconclusive"
    return status_for(series_type, blocking)


#: One verdict as the series need it: (time, id, blocking, is a re-test).
_Row = tuple[float, str, object, bool, bool]  # time, id, blocking, is a re-test, is on the grid


def _row(record: Mapping[str, Any]) -> _Row:
    blocking = (record.get("test_keys") or {}).get("blocking")
    return (parse_time(record["measurement_start_time"]), str(record["id"]), blocking, retest_of(record) is not None,
            on_grid(record))


def series_from_records(records: Iterable[Mapping[str, Any]]) -> list[Series]:
    """One series per (probe, target, blocking type) ever seen blocked, from verdict records.

    Other records are skipped; points are sorted by time and de-duplicated by id. Re-tests are
    points like any other, at their own times.
    """
    verdicts: dict[tuple[str, str], dict[str, _Row]] = {}
    services: dict[tuple[str, str], str] = {}
    types: dict[tuple[str, str], set[str]] = {}
    for record in records:
        if record.get("record_type") != "verdict":
            continue
        key = (str(record.get("probe_id", "")), str(record["target"]))
        row = _row(record)
        verdicts.setdefault(key, {})[row[1]] = row
        services[key] = str(record.get("service", ""))
        kind = event_type(row[2])
        if kind is not None:
            types.setdefault(key, set()).add(kind)
    out: list[Series] = []
    for key in sorted(types):
        rows = sorted(verdicts[key].values(), key=lambda r: (r[0], r[1]))
        for kind in sorted(types[key]):
            points = tuple(Point(t, mid, point_status(kind, b, rt), grid) for t, mid, b, rt, grid in rows)
            out.append(Series(key[0], key[1], services[key], CHECK_OF_TYPE.get(kind, kind), kind, points))
    return out


def ordered(points: Iterable[Point]) -> list[Point]:
    """Points sorted by (time, id), the first of each id kept: the input order does not matter."""
    seen: set[str] = set()
    out: list[Point] = []
    for point in sorted(points, key=lambda p: (p.time, p.id)):
        if point.id not in seen:
            seen.add(point.id)
            out.append(point)
    return out


def event_id(series: Series, start_high: float, first_evidence: str) -> str:
    """Deterministic: the same series and onset give the same id on every run."""
    text = "|".join((series.probe_id, series.target, series.check, series.type, f"{start_high:.6f}", first_evidence))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _make_event(
    series: Series, start: tuple[float, float, float], end: tuple[float, float, float] | None,
    confidence: float, evidence: Sequence[str], salt: str = "",
) -> Event:
    start_time, start_low, start_high = start
    end_time, end_low, end_high = end if end is not None else (None, None, None)
    first = evidence[0] if evidence else ""
    return Event(
        id=event_id(series, start_high, salt + first), probe_id=series.probe_id, target=series.target,
        service=series.service, check=series.check, type=series.type, start_time=start_time,
        start_low=start_low, start_high=start_high, end_time=end_time, end_low=end_low, end_high=end_high,
        confidence=round(confidence, 4), evidence=tuple(evidence),
    )


# -- the anchor: ooni/data's two-sided CUSUM -----------------------------------------------


def cusum_detect(series: Series, params: CusumParams = CusumParams()) -> list[Event]:
    """The anchor detector. Each point is y = 1 (blocked, or inconclusive: without controls an
    outage is a failure too) or y = 0 (ok). State starts unknown and is settled silently by the
    first crossing; after that, ``s_pos`` runs in the ok state and ``s_neg`` in the blocked state,
    and a crossing changes state. A change is timestamped at the point that detects it, so an
    event's bounds collapse onto that point.
    """
    drift = (params.mu1 - params.mu0) / 2.0
    state, s_pos, s_neg = "unk", 0.0, 0.0
    last_time: float | None = None
    events: list[Event] = []
    open_start: float | None = None
    evidence: list[str] = []
    n_bad = n_all = 0
    for point in ordered(series.points):
        y = 0.0 if point.status == "ok" else 1.0
        if last_time is not None and point.time - last_time > params.gap_seconds:
            decay = 0.5 ** ((point.time - last_time) / params.halflife_seconds)
            s_pos, s_neg = s_pos * decay, s_neg * decay
        last_time = point.time
        up = s_pos + (y - params.mu0) - drift
        down = s_neg - (y - params.mu1) - drift
        if state == "unk":
            s_pos, s_neg = max(0.0, up), max(0.0, down)
            if s_pos > params.h:
                state, s_pos, s_neg = "blk", 0.0, 0.0
            elif s_neg > params.h:
                state, s_pos, s_neg = "ok", 0.0, 0.0
            continue
        if state == "ok":
            s_pos, s_neg = max(0.0, up), 0.0
            if s_pos > params.h:
                state, s_pos = "blk", 0.0
                open_start, evidence, n_bad, n_all = point.time, [], 0, 0
        else:
            s_pos, s_neg = 0.0, max(0.0, down)
            if s_neg > params.h:
                state, s_neg = "ok", 0.0
                if open_start is not None:
                    events.append(_anchor_event(series, open_start, point.time, n_bad, n_all, evidence))
                open_start = None
                continue
        if open_start is not None:
            n_all += 1
            if y == 1.0:
                n_bad += 1
                if len(evidence) < params.evidence_cap:
                    evidence.append(point.id)
    if open_start is not None:
        events.append(_anchor_event(series, open_start, None, n_bad, n_all, evidence))
    return events


def _anchor_event(
    series: Series, start: float, end: float | None, n_bad: int, n_all: int, evidence: list[str]
) -> Event:
    """The anchor has no notion of confidence: report the share of failures inside the event."""
    return _make_event(
        series, (start, start, start), None if end is None else (end, end, end),
        n_bad / n_all if n_all else 0.0, evidence, salt="cusum:",
    )


# -- the detector: Bernoulli LLR CUSUM with controls and bounds ----------------------------


@dataclass
class _Open:
    """The event in progress (mutable working state of :class:`Detector`)."""

    start: tuple[float, float, float]
    noise: float
    evidence: list[str]
    n_bad: int
    n_ok: int
    end_s: float = 0.0  # lift evidence (nats)
    ok_run: int = 0  # good points since the last blocked one
    n_bad_regular: int = 0  # blocked regular runs (not re-tests): how long it has been blocked
    n_ok_regular: int = 0  # good regular runs (how steady it is: grid runs only, whatever the sampling)
    run_ok_regular: int = 0  # good regular runs in the current run of lift evidence (end_s > 0)
    run_steady: bool = False  # whether the event was steady when that run began (fixed for the run)
    pause_from: float = 0.0  # time of the last blocked point not refuted (a pause, or the quiet, runs from it)
    lone: float = 0.0  # a blocked point after good ones: the length of the pause it would end, if confirmed
    lone_at: float = 0.0  # ... and its time
    lone_regular: bool = False  # ... and whether it was a regular run
    pause: float = 0.0  # longest pause so far: from a blocked point to the next two in a row, good ones between
    pauses: int = 0  # pauses seen


class Detector:
    """Incremental :func:`detect` for one series: ``feed`` points in time order, read ``events``.

    Pure: no clock. A point older than the last one fed is ignored (the batch form sorts
    first); a repeated id at the same time is ignored. Memory is bounded: counts, the last
    ``lookback`` decisive points (to place a change once it is detected), at most
    ``evidence_cap`` ids per event, and the events found.
    """

    lookback = 288  # a day of 5-minute measurements

    def __init__(self, series: Series, params: DetectParams = DetectParams()) -> None:
        self.series = Series(series.probe_id, series.target, series.service, series.check, series.type)
        self.p = params
        self._keep = 1.0 - 1.0 / params.memory
        self._bad_w = params.noise_prior * params.prior_weight  # decayed counts of the quiet periods
        self._all_w = params.prior_weight
        self._closed: list[Event] = []
        self._open: _Open | None = None
        self._s = 0.0  # onset evidence (nats), while no event is open
        self._pending: list[bool] = []  # the current onset run (True = blocked), learnt as noise if it fades
        self._pending_regular = [0, 0]  # good and blocked regular runs in it
        self._recent: deque[tuple[float, str, bool]] = deque(maxlen=self.lookback)
        self._floor = -math.inf  # a change is never placed at or before the previous event's end
        self._last_decisive: float | None = None
        self._last_time: float | None = None
        self._ids_at_last: set[str] = set()

    # -- public ---------------------------------------------------------------------------

    @property
    def noise(self) -> float:
        """The current estimate of this series' false-failure rate."""
        rate = self._bad_w / self._all_w
        return min(self.p.noise_max, max(self.p.noise_min, rate))

    @property
    def n_events(self) -> int:
        """How many events so far, the ongoing one included (cheaper than ``len(events())``)."""
        return len(self._closed) + (self._open is not None)

    @property
    def unsettled(self) -> bool:
        """True while lift evidence builds in an open event that more points now would end sooner: a
        steady one (:meth:`_steady`), or one whose quiet has outlasted its longest pause (the pattern is
        clear); or after a blocked point that follows a pause (one more point tells noise from a phase).
        The daemon re-tests, or brings runs forward, while it holds (probe.analysis.retest)."""
        o = self._open
        if o is None:  # an onset: the re-tests after the change that started it are enough (2.3 intervals
            return False  # at p95); more bursts while it builds added false alarms in the bench
        # Not in the pause of an intermittent (flapping) blocking: dense re-tests there would make the
        # pause look like a lift and split one event into many.
        if self.p.pause_guard and o.lone:  # a blocked point after a pause: one more point tells noise from a phase
            return True
        return o.end_s > 0.0 and (o.run_steady or (self.p.pause_guard and self._outlasted(o)))

    @property
    def n_closed(self) -> int:
        """How many events have ended so far."""
        return len(self._closed)

    def feed(self, point: Point) -> list[Event]:
        """Take one point; return the events so far (the last one ongoing if its end is None)."""
        self._step(point)
        return self.events()

    def take(self, point: Point) -> None:
        """Take one point, without building the events (cheaper than :meth:`feed` per point)."""
        self._step(point)

    def feed_many(self, points: Iterable[Point]) -> list[Event]:
        for point in points:
            self._step(point)
        return self.events()

    def events(self) -> list[Event]:
        out = list(self._closed)
        if self._open is not None:
            o = self._open
            conf = self._confidence(o.n_bad, o.n_ok, o.noise)
            out.append(_make_event(self.series, o.start, None, conf, o.evidence))
        return out

    # -- internals --------------------------------------------------------------------------

    def _step(self, point: Point) -> None:
        if self._last_time is not None:
            if point.time < self._last_time:
                return
            if point.time == self._last_time and point.id in self._ids_at_last:
                return
        if point.time != self._last_time:
            self._ids_at_last = set()
        self._ids_at_last.add(point.id)
        self._last_time = point.time
        if point.status == "inconclusive":
            return  # an outage: the controls failed too, so it says nothing about this blocking
        bad = point.status == "blocked"
        self._decay(point.time)
        self._last_decisive = point.time
        self._recent.append((point.time, point.id, bad))
        if self._open is None:
            if bad or self._s > 0.0:
                self._pending_regular[bad] += point.regular
            self._quiet_step(bad)
        else:
            self._open.n_bad_regular += bad and point.regular
            self._blocked_step(self._open, bad, point)

    def _decay(self, now: float) -> None:
        """Halve stale evidence per half-life of silence; an onset run worth less than one good
        measurement after that is forgotten (learnt as noise)."""
        if self._last_decisive is None or now - self._last_decisive <= self.p.gap_seconds:
            return
        factor = 0.5 ** ((now - self._last_decisive) / self.p.halflife_seconds)
        if self._open is None:
            self._s *= factor
            if self._s < math.log((1 - self.noise) / (1 - self.p.block_rate)):
                self._commit_pending()
        else:
            self._open.end_s *= factor

    def _quiet_step(self, bad: bool) -> None:
        p0, p1 = self.noise, self.p.block_rate
        if self._s == 0.0 and not bad:
            self._learn(False)
            return
        self._s = max(0.0, self._s + (math.log(p1 / p0) if bad else math.log((1 - p1) / (1 - p0))))
        self._pending.append(bad)
        if self._s == 0.0:
            self._commit_pending()
        elif self._s >= self.p.h_on:
            self._fire(p0)

    def _place(self, p0: float, onset: bool, floor: float) -> int:
        """Index in ``_recent`` where the change most likely happened (maximum-likelihood, sharp model).

        Scans back from the newest point, summing the log-likelihood ratio of "changed" over
        "not changed", and keeps the candidate with the largest sum; the change must start
        with a blocked point (onset) or an ok point (lift), after ``floor``.
        """
        p1 = self.p.block_rate
        on_bad, on_ok = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
        total, best, best_i = 0.0, -math.inf, len(self._recent) - 1
        for i in range(len(self._recent) - 1, -1, -1):
            t, _, bad = self._recent[i]
            if t <= floor:
                break
            total += (on_bad if bad else on_ok) * (1 if onset else -1)
            if bad == onset and total > best:
                best, best_i = total, i
        return best_i

    def _fire(self, p0: float) -> None:
        j = self._place(p0, onset=True, floor=self._floor)
        high = self._recent[j][0]
        low = next((t for t, _, bad in reversed(list(self._recent)[:j]) if not bad and t > self._floor), high)
        run = list(self._recent)[j:]
        ids = [mid for _, mid, bad in run if bad]
        n_bad = len(ids)
        self._open = _Open(start=((low + high) / 2.0, low, high), noise=p0,
                           evidence=ids[: self.p.evidence_cap], n_bad=n_bad, n_ok=len(run) - n_bad,
                           n_bad_regular=self._pending_regular[True], n_ok_regular=self._pending_regular[False],
                           pause_from=self._recent[-1][0])
        self._s, self._pending, self._pending_regular = 0.0, [], [0, 0]

    def _steady(self, o: _Open) -> bool:
        """Counted on grid runs only (re-tests and early runs come in bursts around changes: they would
        make the blocked phases of an intermittent blocking look longer than its pauses), before the current
        run of lift evidence: blocked at ``steady_min`` grid runs or more, ``steady_min`` more for each good
        one, and at least ``steady_share`` of them."""
        bad, ok = o.n_bad_regular, o.n_ok_regular - o.run_ok_regular
        return bad >= self.p.steady_min * (1 + ok) and bad >= self.p.steady_share * (bad + ok)

    def _outlasted(self, o: _Open) -> bool:
        """An event that paused (intermittent) whose quiet has now lasted longer than its pauses (the
        longest, with a margin that shrinks as more pauses are seen)."""
        if not o.pauses or self._last_time is None:
            return False
        return self._last_time - o.pause_from > o.pause * (1.0 + self.p.pause_margin / o.pauses)

    def _lift_rate(self, o: _Open) -> float:
        """The lift test's "still blocked" rate: a steady event's own share (at most block_rate), else
        lift_rate. Fixed within a run of lift evidence (steadiness and share as they were before it)."""
        if not (self.p.steady_lift and o.run_steady):
            return self.p.lift_rate
        bad, ok = o.n_bad_regular, o.n_ok_regular - o.run_ok_regular
        return min(self.p.block_rate, max(self.p.lift_rate, bad / max(1, bad + ok)))

    def _blocked_step(self, o: _Open, bad: bool, point: Point) -> None:
        if o.end_s == 0.0:  # a run of lift evidence may start here: how steady the event was before it
            o.run_steady = self._steady(o)
        p0, p1 = o.noise, self._lift_rate(o)
        if bad:
            if o.ok_run:  # after good points: the end of a pause, or a lone failure inside it
                o.lone, o.lone_at, o.lone_regular = point.time - o.pause_from, point.time, point.regular
            elif o.lone:  # blocked twice in a row: the pause ended
                o.pause, o.pauses, o.lone = max(o.pause, o.lone), o.pauses + 1, 0.0
                o.pause_from = point.time
            else:
                o.pause_from = point.time
            o.n_bad += 1
            o.ok_run = 0
            if len(o.evidence) < self.p.evidence_cap:
                o.evidence.append(point.id)
        else:
            if o.lone and o.lone_regular and point.regular:  # two grid runs, no re-check between: a short phase
                o.pause, o.pauses, o.pause_from = max(o.pause, o.lone), o.pauses + 1, o.lone_at
            o.lone = 0.0  # (else refuted by a quick re-check: noise, the pause goes on from pause_from)
            o.n_ok += 1
            o.ok_run += 1
        o.end_s = max(0.0, o.end_s + (math.log(p0 / p1) if bad else math.log((1 - p0) / (1 - p1))))
        o.n_ok_regular += point.regular and not bad
        o.run_ok_regular = 0 if o.end_s == 0.0 else o.run_ok_regular + (point.regular and not bad)
        guard = self.p.pause_guard and o.pauses > 0 and not o.run_steady
        h_off = self.p.h_off_steady if o.run_steady and self.p.steady_lift else self.p.h_off
        if o.end_s >= h_off and (not guard or self._outlasted(o)):
            self._close(o)

    def _close(self, o: _Open) -> None:
        j = self._place(o.noise, onset=False, floor=o.start[2])
        recent = list(self._recent)
        high = recent[j][0]
        low = next((t for t, _, bad in reversed(recent[:j]) if bad), o.start[2])
        after = recent[j:]
        late = {mid for _, mid, bad in after if bad}
        n_bad = o.n_bad - len(late)
        n_ok = o.n_ok - (len(after) - len(late))
        evidence = [mid for mid in o.evidence if mid not in late]
        conf = self._confidence(n_bad, n_ok, o.noise)
        self._closed.append(_make_event(self.series, o.start, ((low + high) / 2.0, low, high), conf, evidence))
        self._open = None
        self._floor = low
        # the lift's points are the new quiet period: learn them as noise
        for _, _, bad in after:
            self._learn(bad)

    def _commit_pending(self) -> None:
        """The onset run fell back to nothing: its points were noise of the quiet state."""
        for bad in self._pending:
            self._learn(bad)
        self._s, self._pending, self._pending_regular = 0.0, [], [0, 0]

    def _learn(self, bad: bool) -> None:
        self._bad_w = self._bad_w * self._keep + (1.0 if bad else 0.0)
        self._all_w = self._all_w * self._keep + 1.0

    def _confidence(self, n_bad: int, n_ok: int, p0: float) -> float:
        """Posterior that the episode is a blocking rather than noise, with prior odds e^-h_on."""
        p1 = self.p.block_rate
        llr = n_bad * math.log(p1 / p0) + n_ok * math.log((1 - p1) / (1 - p0)) - self.p.h_on
        if llr > 40:
            return 1.0
        if llr < -40:  # many good points inside an event (flapping, re-tests): exp() would overflow
            return 0.0
        return 1.0 / (1.0 + math.exp(-llr))


def detect(series: Series, params: DetectParams = DetectParams()) -> list[Event]:
    """Events of one series: :class:`Detector` fed the points sorted by time, duplicates dropped."""
    return Detector(series, params).feed_many(ordered(series.points))


def detect_all(records: Iterable[Mapping[str, Any]], params: DetectParams = DetectParams()) -> list[Event]:
    """Events of every series in these verdict records, ordered by start time."""
    events = [e for s in series_from_records(records) for e in detect(s, params)]
    return sorted(events, key=lambda e: (e.start_time, e.target, e.type))


class RecordDetector:
    """The daemon's detector: feed each run's records, get back the events they touched.

    Pure and incremental like :class:`Detector`, one per (probe, target, type); a series
    starts the first time a verdict names that blocking type (earlier points said nothing
    about it but "ok", which the detector's noise prior already assumes).
    """

    history = 48  # verdicts kept per target: 4 h at 5-minute intervals, ~10 KB per target

    def __init__(self, params: DetectParams = DetectParams()) -> None:
        self.params = params
        self._series: dict[tuple[str, str], dict[str, Detector]] = {}
        self._of_target: dict[str, list[dict[str, Detector]]] = {}  # target -> its series (any probe)
        # The recent verdicts of each target, replayed into a series when it starts, so that
        # its first event is bounded by the last good measurement. Bounded like Detector's memory.
        self._history: dict[tuple[str, str], deque[_Row]] = {}

    def __call__(self, records: Iterable[Mapping[str, Any]]) -> list[Event]:
        return self.feed(records)

    def unsettled(self, target: str, seen: bool | None = True) -> bool:
        """Whether more measurements of ``target`` now would decide a lift sooner
        (:attr:`Detector.unsettled`), in its series that a re-test can see (``seen`` True: not
        throttling), cannot see (False), or in any (None: a full run sees them all)."""
        return any(d.unsettled for d in self._detectors(target, seen))

    def ongoing(self, target: str, seen: bool | None = None) -> bool:
        """Whether an event of ``target`` is open (in its series as for :meth:`unsettled`)."""
        return any(d.n_events > d.n_closed for d in self._detectors(target, seen))

    def _detectors(self, target: str, seen: bool | None) -> Iterator[Detector]:
        for detectors in self._of_target.get(target, ()):
            for kind, d in detectors.items():
                if seen is None or (point_status(kind, False, retest=True) != "inconclusive") == seen:
                    yield d

    def feed(self, records: Iterable[Mapping[str, Any]]) -> list[Event]:
        touched: dict[str, Event] = {}
        for record in sorted((r for r in records if r.get("record_type") == "verdict"),
                             key=lambda r: str(r["measurement_start_time"])):
            key = (str(record.get("probe_id", "")), str(record["target"]))
            row = _row(record)
            when, mid, blocking, retest, grid = row
            if key not in self._series:
                self._of_target.setdefault(key[1], []).append(self._series.setdefault(key, {}))
            detectors = self._series[key]
            kind = event_type(blocking)
            history = self._history.setdefault(key, deque(maxlen=self.history))
            if kind is not None and kind not in detectors:
                series = Series(key[0], key[1], str(record.get("service", "")), CHECK_OF_TYPE.get(kind, kind), kind)
                detectors[kind] = Detector(series, self.params)
                detectors[kind].feed_many(Point(t, i, point_status(kind, b, rt), g) for t, i, b, rt, g in history)
            history.append(row)
            for series_type, detector in detectors.items():
                before = {e.id: e for e in detector.events()}
                for event in detector.feed(Point(when, mid, point_status(series_type, blocking, retest), grid)):
                    if before.get(event.id) != event:
                        touched[event.id] = event
        return list(touched.values())
