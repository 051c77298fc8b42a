"""The throttling decision: pure functions over rate samples, no I/O, no clock.

A throttled flow and its controls differ only in the trigger (the SNI), so the
question is whether the target's *distribution* of per-interval rates sits
clearly below the controls'. In the manner of Wehe, two tests must agree:

- a two-sample Kolmogorov-Smirnov test on the per-interval rates (p < 0.01):
  the two samples do not come from one distribution;
- an area test: the area between the two empirical CDFs on a log2 rate axis.
  For two separated distributions it is the log2 of the ratio of their
  geometric means, so ``area >= 1`` means "at least twice as slow", at any
  speed. Together with the ratio of medians (<= 0.5) it keeps the KS test,
  which finds *some* difference in almost any two TCP flows, from flagging
  ordinary unfairness, loss or jitter.

Medians of interval rates, not averages, are compared: random loss stalls a
flow in a few intervals (an RTO), a policer slows every interval.

The handshake time is a second signal (Turkey 2023, Kazakhstan 2022: throttled
handshakes took over 2 s against ~100 ms for other SNIs on the same IP). It
turns an inconclusive rate comparison into a positive one and raises the
confidence of a positive one; alone it never flags.

A slow home link with a deep queue (bufferbloat) is the commonest benign look-alike:
a control's unfinished data still sitting in the link's queue makes the next
transfer start seconds behind it. The TCP connect time (SYN to SYN-ACK, before
any SNI, so no SNI policer touches it) measures that queue; a target whose
connect took far longer than the controls' started on a full queue, and its run
is re-measured, never counted as evidence (:func:`queue_inflated`).

A first positive or inconclusive run is decided by a confirmation run
(:func:`combine`). docs/design/throttling.md explains the thresholds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from scipy import stats

Direction = Literal["down", "up", "both"]
#: (seconds since the request, cumulative payload bytes)
Sample = tuple[float, int]

KS_ALPHA = 0.01  # the KS test's significance level
AREA_MIN = 1.0  # log2 units: the target at least ~2x slower across its distribution
RATIO_MAX = 0.5  # target median interval rate / control median interval rate
CLEAR_RATIO = 0.7  # above this (or KS not significant) a run is clearly not throttled
HANDSHAKE_MIN = 1.0  # seconds: a handshake this slow ...
HANDSHAKE_FACTOR = 5.0  # ... and this many times the controls' is a throttling signal
MIN_TARGET_INTERVALS = 4
MIN_CONTROL_INTERVALS = 2
MIN_INTERVAL = 1e-6  # seconds; shorter intervals (same clock tick) are merged with the next one
COLLATERAL_FACTOR = 5.0  # a throttled direction this many times faster than the other is collateral
WARMUP_FRACTION = 0.1  # of a flow's duration skipped by the plateau estimate (burst, slow start)
TAIL_FRACTION = 0.05  # of a flow's plateau bytes left out at its end (last segments' timeout)
QUEUE_FACTOR = 3.0  # a target connect this many times the controls' fastest ...
QUEUE_SLACK = 0.05  # ... plus this many seconds started behind a full queue: re-measure
QUEUE_REASON = "the path's queue was full when the target started"
RATE_REASON = "the target's steady rate is as fast as its controls'"
TARGET_REASON = "the target's transfer failed or moved too few bytes"
FEW_REASON = "too few rate samples"


@dataclass(frozen=True)
class Flow:
    """What the decision needs from one transfer (a throughput CheckResult's details)."""

    samples: tuple[Sample, ...]
    handshake_time: float | None = None
    ok: bool = True
    link_samples: tuple[Sample, ...] = ()  # bytes the path carried (segments x MSS), same times
    connect_time: float | None = None  # TCP connect (one round trip through the path's queues), seconds


def interval_rates(samples: Sequence[Sample], min_interval: float = MIN_INTERVAL) -> list[float]:
    """Bytes per second between consecutive samples, merging intervals shorter than ``min_interval``."""
    rates: list[float] = []
    if not samples:
        return rates
    t0, b0 = samples[0]
    for t, b in samples[1:]:
        if t - t0 >= min_interval:
            rates.append((b - b0) / (t - t0))
            t0, b0 = t, b
    return rates


def plateau(samples: Sequence[Sample], warmup: float = WARMUP_FRACTION) -> tuple[int, float] | None:
    """(bytes, seconds) after the warm-up: the span a policer's steady rate shows in.

    The first tenth of the transfer holds the token bucket's burst and TCP's
    slow start (and its overshoot into the policer); the rest, up to the tail, is the plateau.
    """
    if len(samples) < 2:
        return None
    t_first, t_last = samples[0][0], samples[-1][0]
    duration = t_last - t_first
    if duration <= 0:
        return None
    cut = t_first + warmup * duration
    start = next((s for s in samples if s[0] >= cut), samples[0])
    if t_last - start[0] < 0.5 * duration * (1 - warmup):  # a long gap swallowed the plateau
        start = samples[0]
    # The tail: a transfer's last bytes can wait for a retransmission timeout (lost last
    # segments have no duplicate ACKs to recover them): 104 bytes, or 3.7 KB, 200 ms after the
    # other 116 KB made 2 Mbit/s estimates 24-27% low. The plateau ends where all but
    # TAIL_FRACTION of its bytes arrived; on a steady flow that drops bytes and time alike.
    goal = start[1] + (1 - TAIL_FRACTION) * (samples[-1][1] - start[1])
    end = next(s for s in samples if s[0] >= start[0] and s[1] >= goal)
    if end[0] <= start[0]:
        end = samples[-1]
    span = end[0] - start[0]
    if span <= 0:
        return None
    return end[1] - start[1], span


def plateau_rate(flows: Sequence[Sequence[Sample]], warmup: float = WARMUP_FRACTION) -> float | None:
    """The steady rate of one or more transfers (bytes/s): plateau bytes over plateau seconds.

    An end-to-end slope, not a regression: under a policer, losses early in the
    flow make the in-order byte count lag and retransmissions later make it jump,
    so only the whole span averages them out (bench: within 11% at 128 kbit/s,
    where a Theil-Sen slope over the tail was 20-28% high). A transfer whose
    plateau is under half the longest one's (a run cut short by a slow
    handshake) is left out.
    """
    spans = [p for p in (plateau(s, warmup) for s in flows) if p is not None]
    if not spans:
        return None
    longest = max(s for _, s in spans)
    kept = [(b, s) for b, s in spans if s >= 0.5 * longest]
    return sum(b for b, _ in kept) / sum(s for _, s in kept)


def estimate_rate(flows: Sequence[Flow], warmup: float = WARMUP_FRACTION) -> float | None:
    """The policer's rate: the plateau of what the path carried, else of the in-order bytes.

    In-order bytes lag while a lost segment waits for its retransmission,
    though the path keeps delivering the segments behind it; a transfer that
    ends inside such a stall (seconds long at 64 kbit/s) reads half the rate.
    Segment counts (``link_samples``) do not stall. Without them (no
    TCP_INFO) the in-order samples are used.
    """
    with_link = [f.link_samples for f in flows if len(f.link_samples) >= 2]
    if with_link and len(with_link) == len(flows):
        return plateau_rate(with_link, warmup)
    return plateau_rate([f.samples for f in flows], warmup)


def mean_rate(samples: Sequence[Sample]) -> float | None:
    """Bytes/s from the first to the last sample (a control's rate, slow start included)."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])


def ks_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample KS statistic and two-sided p-value (exact for small samples)."""
    result = stats.ks_2samp(list(a), list(b))
    return float(result.statistic), float(result.pvalue)


def _log2(x: float) -> float:
    return math.log2(max(x, 1.0))  # rates below 1 B/s are a stall, as slow as it gets


def area_statistic(target: Sequence[float], control: Sequence[float]) -> float:
    """Signed area between the empirical CDFs on a log2 axis: > 0 when the target is slower.

    Equals mean(log2 control) - mean(log2 target): for separated samples, the
    log2 of the ratio of geometric means (1.0 = twice as slow).
    """
    if not target or not control:
        return 0.0
    return statistics.fmean(_log2(x) for x in control) - statistics.fmean(_log2(x) for x in target)


@dataclass(frozen=True)
class RunResult:
    """One comparison of a target transfer with its controls."""

    outcome: Literal["positive", "negative", "inconclusive"]
    reason: str
    target_median: float | None = None
    control_median: float | None = None
    ratio: float | None = None
    ks_statistic: float | None = None
    p_value: float | None = None
    area: float | None = None
    handshake_signal: bool = False
    target_intervals: int = 0
    control_intervals: int = 0


def _control_rate(controls: Sequence[Flow]) -> float | None:
    """The controls' rate: the median of their whole-transfer rates (slow start included)."""
    rates = [r for r in (mean_rate(f.samples) for f in controls if f.ok) if r is not None]
    return statistics.median(rates) if rates else None


def steady_rates_agree(target_rate: float | None, control_rate: float | None) -> bool:
    """Is the target's steady rate within :data:`CLEAR_RATIO` of the controls' rate?

    Then no comparison of interval-rate distributions can make it throttled: a throttling
    decision is always one whose own rate estimate is clearly below its controls'.
    """
    return bool(target_rate and control_rate and target_rate > CLEAR_RATIO * control_rate)


def _handshake_signal(target: Flow, controls: Sequence[Flow]) -> bool:
    times = [c.handshake_time for c in controls if c.handshake_time is not None]
    if target.handshake_time is None or not times:
        return False
    return target.handshake_time >= max(HANDSHAKE_MIN, HANDSHAKE_FACTOR * statistics.median(times))


def queue_inflated(target: Flow, controls: Sequence[Flow]) -> bool:
    """Did the target start behind a full queue: its connect far slower than the controls' fastest?

    A connect is one round trip through the path's queues before any SNI is sent: a policer by
    SNI does not slow it, a deep queue still holding a control's data does (2 Mbit/s link: 420 ms
    against 30 ms).
    """
    floors = [c.connect_time for c in controls if c.connect_time is not None]
    if target.connect_time is None or not floors:
        return False
    return target.connect_time > QUEUE_FACTOR * min(floors) + QUEUE_SLACK


def compare(target: Flow, controls: Sequence[Flow]) -> RunResult:
    """One run: is the target's rate distribution clearly below the controls'?

    A target that started behind a full queue (:func:`queue_inflated`) is never positive: its
    run is inconclusive, to be re-measured.
    """
    run = _compare(target, controls)
    if run.outcome != "negative" and queue_inflated(target, controls):
        return replace(run, outcome="inconclusive", reason=QUEUE_REASON)
    return run


def _compare(target: Flow, controls: Sequence[Flow]) -> RunResult:
    usable = [c for c in controls if c.ok]
    hs = _handshake_signal(target, usable)
    t_rates = interval_rates(target.samples)
    c_rates = [r for c in usable for r in interval_rates(c.samples)]
    if not usable:
        return RunResult("inconclusive", "every control transfer failed", handshake_signal=hs)
    if not target.ok:
        return RunResult("inconclusive", TARGET_REASON, handshake_signal=hs)
    if len(t_rates) < MIN_TARGET_INTERVALS or len(c_rates) < MIN_CONTROL_INTERVALS:
        return RunResult("inconclusive", FEW_REASON, handshake_signal=hs,
                         target_intervals=len(t_rates), control_intervals=len(c_rates))
    t_med, c_med = statistics.median(t_rates), statistics.median(c_rates)
    ratio = t_med / c_med if c_med > 0 else 1.0
    ks, p = ks_test(t_rates, c_rates)
    area = area_statistic(t_rates, c_rates)
    base = RunResult(
        "inconclusive", "slower, but not clearly", target_median=t_med, control_median=c_med,
        ratio=ratio, ks_statistic=ks, p_value=p, area=area, handshake_signal=hs,
        target_intervals=len(t_rates), control_intervals=len(c_rates),
    )
    significant = p < KS_ALPHA
    if not hs and steady_rates_agree(estimate_rate([target]), _control_rate(usable)):
        # The interval rates' shapes can differ while the rates do not: on a 10 Mbit/s shaped
        # link the target's median interval rate was 4% of the controls' (bursty delivery), its
        # steady rate 86%. A throttle slows the rate itself (the lab's policers: under 1%).
        return replace(base, outcome="negative", reason=RATE_REASON)
    if significant and area >= AREA_MIN and ratio <= RATIO_MAX:
        return replace(base, outcome="positive", reason="KS significant, area and ratio past their thresholds")
    if hs and significant and ratio <= CLEAR_RATIO:
        return replace(base, outcome="positive", reason="slow handshake and a significantly slower transfer")
    # Too few intervals can keep KS above alpha even for a target 100x slower: that is not
    # evidence of "not throttled", so a clearly slower target stays inconclusive (and is re-run).
    if ratio > CLEAR_RATIO or area < AREA_MIN / 2 or (not significant and ratio > RATIO_MAX):
        return replace(base, outcome="negative", reason="target as fast as its controls")
    return base


@dataclass(frozen=True)
class ThrottlingDecision(Mapping[str, Any]):
    """The verdict's ``throttling`` mapping (probe.analysis.verdict reads it with ``.get``).

    Rates are in bytes per second, like the throughput check's
    ``rate_bytes_per_second``; ``*_kbit`` give the same in kbit/s.
    ``blocking`` is "throttling", False (not throttled) or None (inconclusive).
    """

    blocking: str | bool | None
    direction: str
    estimated_rate_bps: float | None = None
    control_rate_bps: float | None = None
    estimated_rate_kbit: float | None = None
    control_rate_kbit: float | None = None
    ks_statistic: float | None = None
    p_value: float | None = None
    area: float | None = None
    ratio: float | None = None
    confidence: float = 0.0
    handshake_signal: bool = False
    runs: tuple[str, ...] = ()
    reason: str = ""
    bytes_used: int = 0
    seconds_used: float = 0.0
    directions: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @staticmethod
    def _keys() -> tuple[str, ...]:
        return tuple(ThrottlingDecision.__dataclass_fields__)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def needs_confirmation(first: RunResult) -> bool:
    """A positive or inconclusive first run is decided by a second one."""
    return first.outcome != "negative"


def needs_another_run(runs: Sequence[RunResult]) -> bool:
    """After a confirmation: one more run when its target could not be compared at all.

    Either it started behind a full queue (:data:`QUEUE_REASON`), or, after a positive run, its
    transfer stalled: at 64 kbit/s a policer's 4-packet queue drops the server's first window and
    TCP's retransmission timer backs off (1, 2, 4 s), so a confirmation got 2 KB in its 3.5 s
    while the first run had measured the rate. That stall is not evidence either way; the next
    run decides.
    """
    last = runs[-1] if runs else None
    if last is None or last.outcome != "inconclusive":
        return False
    if last.reason == QUEUE_REASON:
        return True
    return last.reason in (TARGET_REASON, FEW_REASON) and any(r.outcome == "positive" for r in runs[:-1])


def _kbit(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 8 / 1000, 1)


def combine(
    runs: Sequence[RunResult],
    direction: str,
    target_flows: Sequence[Flow],
    control_flows: Sequence[Flow],
    *,
    bytes_used: int = 0,
    seconds_used: float = 0.0,
) -> ThrottlingDecision:
    """The decision for one direction from its runs (one, or a first and a confirmation).

    Throttling needs the last run positive and no run negative; a single negative
    run (or a negative confirmation) clears the target; anything else is
    inconclusive. The rate estimate pools the target's plateaus over all runs.
    """
    # A confirmation whose transfer was too short to compare but whose handshake was
    # throttled (over 1 s, 5x the controls') confirms a positive first run.
    runs = [replace(r, outcome="positive") if r.outcome == "inconclusive" and r.handshake_signal
            and any(o.outcome == "positive" for o in runs) else r for r in runs]
    outcomes = tuple(r.outcome for r in runs)
    last = runs[-1] if runs else RunResult("inconclusive", "no run")
    target_rate = estimate_rate([f for f in target_flows if f.ok])
    control_rate = _control_rate(control_flows)
    hs = any(r.handshake_signal for r in runs)
    if last.outcome == "positive" and not hs and steady_rates_agree(target_rate, control_rate):
        # Every run's rates looked slower, but pooled over the runs they are not: never report
        # "throttled to about X against Y" with X close to Y.
        runs = [*runs[:-1], replace(last, outcome="inconclusive", reason=RATE_REASON)]
        outcomes, last = tuple(r.outcome for r in runs), runs[-1]
    if last.outcome == "positive" and "negative" not in outcomes:
        blocking: str | bool | None = "throttling"
        confidence = 0.99 if outcomes.count("positive") >= 2 else 0.9
        if hs:
            confidence = min(0.999, confidence + 0.009)
    elif last.outcome == "negative":
        blocking = False
        confidence = 0.95 if len(runs) == 1 or outcomes.count("negative") >= 2 else 0.8
    else:
        blocking, confidence = None, 0.0
    return ThrottlingDecision(
        blocking=blocking,
        direction=direction,
        estimated_rate_bps=target_rate,
        control_rate_bps=control_rate,
        estimated_rate_kbit=_kbit(target_rate),
        control_rate_kbit=_kbit(control_rate),
        ks_statistic=last.ks_statistic,
        p_value=last.p_value,
        area=last.area,
        ratio=last.ratio,
        confidence=confidence,
        handshake_signal=hs,
        runs=outcomes,
        reason=last.reason,
        bytes_used=bytes_used,
        seconds_used=seconds_used,
    )


def merge_directions(decisions: Sequence[ThrottlingDecision]) -> ThrottlingDecision:
    """One decision over the measured directions: throttled ones win, "both" if all are."""
    if len(decisions) == 1:
        return decisions[0]
    throttled = [d for d in decisions if d.blocking == "throttling"]
    rates = [d.estimated_rate_bps for d in throttled if d.estimated_rate_bps]
    if len(throttled) == 2 and len(rates) == 2 and max(rates) >= COLLATERAL_FACTOR * min(rates):
        # One policed direction slows the other's ACKs (or requests) on the same flow: a download
        # policed at 256 kbit/s cut the upload from ~150 Mbit/s to 2-19 Mbit/s in the lab. The
        # policed direction is the slow one; the other stays in ``directions`` as evidence.
        throttled = [min(throttled, key=lambda d: d.estimated_rate_bps or math.inf)]
    per_direction = {d.direction: d.as_dict() for d in decisions}
    used = sum(d.bytes_used for d in decisions), sum(d.seconds_used for d in decisions)
    if throttled:
        main = min(throttled, key=lambda d: d.estimated_rate_bps or math.inf)
        direction = "both" if len(throttled) == len(decisions) else main.direction
        return _replace(main, direction=direction, per_direction=per_direction, used=used)
    if any(d.blocking is None for d in decisions):
        main = next(d for d in decisions if d.blocking is None)
        return _replace(main, direction=main.direction, per_direction=per_direction, used=used)
    return _replace(decisions[0], direction="both", per_direction=per_direction, used=used)


def _replace(
    d: ThrottlingDecision, *, direction: str, per_direction: Mapping[str, Any], used: tuple[int, float]
) -> ThrottlingDecision:
    values = asdict(d)
    values.update(direction=direction, directions=per_direction, bytes_used=used[0], seconds_used=used[1],
                  runs=tuple(values["runs"]))
    return ThrottlingDecision(**values)
