"""probe.analysis.throttling: the pure decision, table-driven over synthetic rate series."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from probe.analysis import throttling as th
from probe.analysis.throttling import Flow, RunResult


def series(rate: float, seconds: float, *, step: float = 0.25, burst: int = 0, jitter: float = 0.0,
           seed: int = 1, stall: tuple[float, float] | None = None) -> tuple[th.Sample, ...]:
    """Cumulative bytes at ``rate`` B/s sampled every ~step s, optional initial burst and stall."""
    rng = random.Random(seed)
    out: list[th.Sample] = [(0.0, burst)]
    t, total = 0.0, float(burst)
    while t < seconds:
        dt = step * (1 + rng.uniform(-0.5, 0.5))
        t += dt
        if stall and stall[0] <= t <= stall[1]:
            out.append((t, int(total)))
            continue
        total += rate * dt * (1 + rng.uniform(-jitter, jitter))
        out.append((round(t, 6), int(total)))
    return tuple(out)


def test_interval_rates_merges_same_tick_and_skips_nothing_else() -> None:
    assert th.interval_rates([(0.0, 0), (1.0, 100), (1.0, 150), (2.0, 250)]) == [100.0, 150.0]
    assert th.interval_rates([]) == []
    assert th.interval_rates([(0.0, 0)]) == []


def test_plateau_skips_the_burst() -> None:
    samples = ((0.0, 0), *((t + 0.05, b) for t, b in series(16_000, 5, burst=40_000)))
    # the bucket's burst arrives in the first 50 ms, so a whole-flow average is far too high ...
    assert th.mean_rate(samples) is not None and th.mean_rate(samples) > 20_000  # type: ignore[operator]
    # ... while the plateau is the policer's rate
    assert th.plateau_rate([samples]) == pytest.approx(16_000, rel=0.05)


def test_plateau_pools_runs_and_drops_a_cut_short_one() -> None:
    long = series(16_000, 4)
    short = series(4_000, 0.5)
    assert th.plateau_rate([long, short]) == pytest.approx(16_000, rel=0.05)
    assert th.plateau_rate([]) is None
    assert th.plateau_rate([((0.0, 0),)]) is None


def test_ks_and_area() -> None:
    slow = [1000.0 + i for i in range(20)]
    fast = [100_000.0 + i for i in range(5)]
    d, p = th.ks_test(slow, fast)
    assert d == 1.0 and p < 0.001
    assert th.area_statistic(slow, fast) == pytest.approx(6.64, abs=0.05)  # log2(100)
    assert th.area_statistic(fast, slow) < 0
    assert th.area_statistic([], fast) == 0.0


CTRL = Flow(series(1_000_000, 0.2, step=0.01), handshake_time=0.01)
CTRL2 = Flow(series(900_000, 0.2, step=0.01, seed=2), handshake_time=0.012)


@pytest.mark.parametrize(
    ("target", "controls", "outcome"),
    [
        (Flow(series(16_000, 3), handshake_time=0.01), [CTRL, CTRL2], "positive"),  # policed 128 kbit/s
        (Flow(series(250_000, 1, step=0.05)), [CTRL, CTRL2], "positive"),  # policed 2 Mbit/s
        (Flow(series(950_000, 0.2, step=0.01, seed=3)), [CTRL, CTRL2], "negative"),  # same speed
        # random loss: an RTO stall in a few intervals is not throttling
        (Flow(series(950_000, 0.3, step=0.01, seed=4, stall=(0.1, 0.15))), [CTRL, CTRL2], "negative"),
        (Flow(series(600_000, 0.3, step=0.01, seed=5, jitter=0.05)), [CTRL, CTRL2], "inconclusive"),
        (Flow(series(16_000, 0.5)), [CTRL], "inconclusive"),  # too few target intervals
        # 100x slower, but so few intervals on each side that KS cannot reach p < 0.01: not a negative
        (Flow(series(16_000, 1.1, step=0.25, seed=6)), [Flow(series(2_000_000, 0.02, step=0.01))], "inconclusive"),
        (Flow(series(16_000, 3), ok=False), [CTRL], "inconclusive"),  # target failed
        (Flow(series(16_000, 3)), [Flow((), ok=False)], "inconclusive"),  # every control failed
    ],
)
def test_compare(target: Flow, controls: list[Flow], outcome: str) -> None:
    assert th.compare(target, controls).outcome == outcome


def test_handshake_signal_turns_a_moderate_slowdown_positive() -> None:
    target = Flow(series(600_000, 0.3, step=0.01, seed=5, jitter=0.05), handshake_time=2.5)
    result = th.compare(target, [CTRL, CTRL2])
    assert result.handshake_signal and result.outcome == "positive"
    # alone (as fast as the control) it never flags
    fast = Flow(series(950_000, 0.2, step=0.01, seed=3), handshake_time=2.5)
    assert th.compare(fast, [CTRL, CTRL2]).outcome == "negative"


def _run(outcome: str, hs: bool = False) -> RunResult:
    return RunResult(outcome, "x", ratio=0.01, p_value=0.001, ks_statistic=1.0, area=6.0,  # type: ignore[arg-type]
                     handshake_signal=hs)


@pytest.mark.parametrize(
    ("outcomes", "blocking", "confidence"),
    [
        (["positive", "positive"], "throttling", 0.99),
        (["inconclusive", "positive"], "throttling", 0.9),
        (["positive", "negative"], False, 0.8),
        (["positive", "inconclusive"], None, 0.0),
        (["inconclusive", "inconclusive"], None, 0.0),
        (["negative"], False, 0.95),
        ([], None, 0.0),
    ],
)
def test_combine(outcomes: list[str], blocking: object, confidence: float) -> None:
    target = Flow(series(16_000, 3))
    decision = th.combine([_run(o) for o in outcomes], "down", [target], [CTRL], bytes_used=1234,
                          seconds_used=2.5)
    assert decision.blocking == blocking
    assert decision.confidence == confidence
    assert decision["bytes_used"] == 1234 and decision.get("direction") == "down"
    assert decision.estimated_rate_bps == pytest.approx(16_000, rel=0.05)
    assert decision.estimated_rate_kbit == pytest.approx(128, rel=0.05)


def test_a_throttled_handshake_confirms_a_positive_run() -> None:
    decision = th.combine([_run("positive"), _run("inconclusive", hs=True)], "down", [], [])
    assert decision.blocking == "throttling" and decision.handshake_signal
    assert decision.confidence > 0.99
    assert th.needs_confirmation(_run("positive")) and th.needs_confirmation(_run("inconclusive"))
    assert not th.needs_confirmation(_run("negative"))


def test_decision_is_a_mapping_for_the_verdict() -> None:
    decision = th.ThrottlingDecision(blocking="throttling", direction="up", estimated_rate_bps=16_000.0)
    assert dict(decision)["estimated_rate_bps"] == 16_000.0
    assert set(decision) == set(decision.as_dict()) and len(decision) == len(decision.as_dict())
    with pytest.raises(KeyError):
        decision["nope"]


def test_merge_directions() -> None:
    down = th.ThrottlingDecision(blocking=False, direction="down", bytes_used=10, seconds_used=1.0)
    up = th.ThrottlingDecision(blocking="throttling", direction="up", estimated_rate_bps=8000.0,
                               bytes_used=20, seconds_used=2.0)
    merged = th.merge_directions([down, up])
    assert merged.blocking == "throttling" and merged.direction == "up"
    assert merged.bytes_used == 30 and set(merged.directions) == {"down", "up"}
    both = th.merge_directions([th.ThrottlingDecision(blocking="throttling", direction="down"), up])
    assert both.direction == "both"
    clean = th.merge_directions([down, th.ThrottlingDecision(blocking=False, direction="up")])
    assert clean.blocking is False and clean.direction == "both"
    unsure = th.merge_directions([down, th.ThrottlingDecision(blocking=None, direction="up")])
    assert unsure.blocking is None
    assert th.merge_directions([down]) is down


@pytest.mark.parametrize(("down_rate", "up_rate", "expected"), [
    (32_000.0, 2_000_000.0, "down"),  # the upload only lost its ACKs to the download's policer
    (2_000_000.0, 16_000.0, "up"),
    (32_000.0, 40_000.0, "both"),  # two policers of similar rate
    (32_000.0, 32_000.0 * th.COLLATERAL_FACTOR * 0.99, "both"),
])
def test_a_direction_much_faster_than_the_other_is_collateral(down_rate: float, up_rate: float,
                                                              expected: str) -> None:
    down = th.ThrottlingDecision(blocking="throttling", direction="down", estimated_rate_bps=down_rate)
    up = th.ThrottlingDecision(blocking="throttling", direction="up", estimated_rate_bps=up_rate)
    merged = th.merge_directions([down, up])
    assert merged.blocking == "throttling" and merged.direction == expected
    assert merged.estimated_rate_bps == min(down_rate, up_rate)
    assert set(merged.directions) == {"down", "up"}  # the collateral one is kept as evidence


def test_rate_estimate_prefers_what_the_path_carried() -> None:
    # In-order bytes stall for 1.5 s (a lost segment's retransmission waits behind a full queue)
    # and the transfer ends inside the stall; the segment counts kept rising at the policer's rate.
    in_order = series(8000, 3.0, stall=(1.5, 3.0))
    carried = series(8000, 3.0)
    assert th.estimate_rate([Flow(in_order)]) == pytest.approx(8000 * 1.5 / 2.7, rel=0.25)  # about half
    assert th.estimate_rate([Flow(in_order, link_samples=carried)]) == pytest.approx(8000, rel=0.1)
    # Without segment counts for every flow, the in-order samples of all of them are used.
    assert th.estimate_rate([Flow(in_order, link_samples=carried), Flow(in_order)]) == \
        th.plateau_rate([in_order, in_order])


def test_the_plateau_leaves_out_a_last_segment_that_waited_for_a_timeout() -> None:
    # 2 Mbit/s for 0.5 s, then the last 104 bytes 200 ms later (a lost tail segment's RTO)
    flow = [(i * 0.03, int(250_000 * i * 0.03)) for i in range(18)]
    tail = [*flow, (0.71, flow[-1][1] + 104)]
    assert th.plateau_rate([flow]) == pytest.approx(250_000, rel=0.02)
    assert th.plateau_rate([tail]) == pytest.approx(250_000, rel=0.05)
    assert th.plateau_rate([tail], warmup=0.0) > 0.9 * 250_000


def test_a_target_started_behind_a_full_queue_is_remeasured_not_evidence() -> None:
    """2 Mbit/s home link, deep queue: the target connected in 420 ms against 30 ms for the controls."""
    controls = [Flow(CTRL.samples, connect_time=0.030), Flow(CTRL2.samples, connect_time=0.031)]
    slow = series(16_000, 3)
    behind = th.compare(Flow(slow, connect_time=0.420), controls)
    assert (behind.outcome, behind.reason) == ("inconclusive", th.QUEUE_REASON)
    assert th.needs_confirmation(behind)
    # a policer by SNI does not slow the connect (it comes before the SNI): still positive
    assert th.compare(Flow(slow, connect_time=0.035), controls).outcome == "positive"
    # and an inflated start never turns a negative into anything else
    fast = Flow(series(950_000, 0.2, step=0.01, seed=3), connect_time=0.420)
    assert th.compare(fast, controls).outcome == "negative"
    assert not th.queue_inflated(Flow(slow, connect_time=0.420), [Flow(CTRL.samples)])  # no control connect


def test_a_stalled_confirmation_after_a_positive_run_gets_one_more_run() -> None:
    """64 kbit/s policer: the confirmation's target got 2 KB in 3.5 s (RTO backoff), first run positive."""
    stalled = th.compare(Flow(((0.0, 0), (1.0, 2012), (3.5, 2012)), ok=False), [CTRL, CTRL2])
    assert (stalled.outcome, stalled.reason) == ("inconclusive", th.TARGET_REASON)
    few = th.compare(Flow(series(16_000, 0.5)), [CTRL])
    assert few.reason == th.FEW_REASON
    positive = th.compare(Flow(series(16_000, 3)), [CTRL, CTRL2])
    assert positive.outcome == "positive"
    assert th.needs_another_run([positive, stalled]) and th.needs_another_run([positive, few])
    # no positive run before it: a stalled or failed target is not re-run (a failure is no rate evidence)
    assert not th.needs_another_run([th.compare(Flow(series(16_000, 0.5)), [CTRL]), stalled])
    assert not th.needs_another_run([stalled]) and not th.needs_another_run([])
    # a "slower, but not clearly" or negative confirmation is an answer, not a stall
    slower = replace(positive, outcome="inconclusive", reason="slower, but not clearly")
    assert not th.needs_another_run([positive, slower])
    assert not th.needs_another_run([positive, replace(positive, outcome="negative")])
    # a target behind a full queue is re-measured whatever came before
    assert th.needs_another_run([stalled, replace(stalled, reason=th.QUEUE_REASON)])
    # the third run decides: positive, inconclusive (stall), positive is throttling
    assert th.combine([positive, stalled, positive], "down", [], []).blocking == "throttling"
    assert th.combine([positive, stalled, stalled], "down", [], []).blocking is None


def bursty(rate: float, seconds: float, *, period: float = 0.01, trickles: int = 3) -> tuple[th.Sample, ...]:
    """``rate`` B/s delivered in bursts: per ``period``, ``trickles`` reads of a few bytes, then the
    rest at once (a shaped link's bursts as a reader sees them)."""
    out: list[th.Sample] = [(0.0, 0)]
    total, t = 0, 0.0
    per = int(rate * period)
    while t < seconds:
        for k in range(1, trickles + 1):
            total += 10
            out.append((round(t + k * period * 0.3, 6), total))
        t += period
        total += per - 10 * trickles
        out.append((round(t, 6), total))
    return tuple(out)


def test_interval_shapes_differ_but_the_rates_agree_is_not_throttling() -> None:
    """The class of the shaped-link false positive (bench/throttling_matrix.py, shape10M, 1 of 20):
    a target whose median interval rate is a few per cent of its controls' (bursty delivery) while
    its steady rate is the same is not throttled, in a run and over the runs."""
    target = Flow(bursty(1_000_000, 0.5))
    controls = [Flow(series(1_000_000, 0.5, step=0.01, seed=s)) for s in (1, 2)]
    run = th._compare(target, controls)
    assert run.ratio is not None and run.ratio < 0.05 and run.p_value is not None and run.p_value < th.KS_ALPHA
    assert (run.outcome, run.reason) == ("negative", th.RATE_REASON)
    # Runs that came out positive anyway (another estimator's noise) cannot make a decision that
    # reports a rate close to its controls' as throttled.
    positive = RunResult("positive", "KS significant, area and ratio past their thresholds")
    decision = th.combine([positive, positive], "down", [target], controls)
    assert decision.blocking is None and decision.reason == th.RATE_REASON
    assert decision.estimated_rate_bps and decision.control_rate_bps
    assert decision.estimated_rate_bps > th.CLEAR_RATIO * decision.control_rate_bps
    # a real throttle behind the same bursts is still one: a tenth of the rate
    slow = Flow(bursty(100_000, 2.0))
    assert th._compare(slow, controls).outcome == "positive"
    assert th.combine([positive, positive], "down", [slow], controls).blocking == "throttling"
