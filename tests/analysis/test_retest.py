"""The re-test policy (probe.analysis.retest): what counts as a change, what a re-test measures, no cascade."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from probe.analysis.events import Detector, Point, Series
from probe.analysis.retest import (
    Adaptive,
    Asks,
    Pacer,
    Tracker,
    outcome_of,
    paced_outcome,
    retest_target,
    run_outcome,
    simulate,
)
from probe.core.config import Target


@pytest.mark.parametrize(
    ("blocking", "found"),
    [(False, "ok"), (None, None), ("throttling", "ok"), ("tcp_ip", "tcp_ip"), ("http-diff", "http-diff"),
     ("dns", "dns")],
)
def test_outcome_of(blocking: object, found: str | None) -> None:
    assert outcome_of(blocking) == found


def test_a_change_is_against_the_last_decisive_outcome_and_retests_never_cascade() -> None:
    t = Tracker()
    assert t.observe("a", "ok") is False  # never measured counts as ok
    assert t.observe("a", "tcp_ip") is True  # good -> bad
    assert t.observe("a", "ok", retest=True) is False  # a re-test never triggers re-tests...
    assert t.observe("a", "ok") is False  # ...but sets the last outcome: its run's noise costs one burst
    assert t.observe("a", None) is False and t.observe("a", "ok") is False  # an outage is no change
    assert t.observe("a", "dns") is True and t.observe("a", "tcp_ip") is True  # one blocking to another
    assert t.observe("b", "tcp_ip") is True  # found blocked at start-up
    t.retain(["b"])
    assert t.observe("a", "tcp_ip") is True and t.observe("b", "tcp_ip") is False


def test_a_retest_measures_the_reachability_checks_only() -> None:
    target = Target("t", "svc", "messaging", host="t.test", checks=("dns", "tcp", "tls", "http", "throughput",
                                                                    "diagnostics", "quic"))
    retest = retest_target(target)
    assert retest is not None and retest.checks == ("dns", "tcp", "tls", "http", "quic")
    assert retest.name == target.name and retest.options == target.options
    assert retest_target(Target("c", "control", "control", host="c.test", control=True)) is None
    assert retest_target(Target("x", "svc", "x", addresses=("198.18.0.1",), checks=("throughput",))) is None


def test_simulate_adds_retests_after_changes_only() -> None:
    regular = [(0.0, "ok"), (300.0, "blocked"), (600.0, "blocked"), (900.0, "ok"), (1200.0, "ok")]
    seen = simulate(regular, lambda t0, t: "blocked" if t0 == 300.0 else "ok", lambda s: s, 2, 15.0)
    assert seen == [(0.0, "ok", 0), (300.0, "blocked", 0), (315.0, "blocked", 1), (330.0, "blocked", 2),
                    (600.0, "blocked", 0), (900.0, "ok", 0), (915.0, "ok", 1), (930.0, "ok", 2), (1200.0, "ok", 0)]
    # re-tests that disagree with their run set the last outcome but trigger nothing themselves
    seen = simulate(regular, lambda t0, t: "ok", lambda s: s, 2, 15.0)
    assert [k for _, _, k in seen] == [0, 0, 1, 2, 0, 1, 2, 0, 0]
    assert simulate(regular, lambda t0, t: "ok", lambda s: s, 0, 15.0) == [(t, s, 0) for t, s in regular]


# -- the adaptive interval (Pacer) ---------------------------------------------------------------
# One target, interval 100 s (gap 12.5 s), runs taking 1 s; each row is one run ending at ``now``:
# (now, next slot, changed, blocked, unsettled) -> when the next run comes (None: on the grid).
ONSET = [
    ((0.0, 100.0, False, False, False), None),  # nothing changes: nothing to do
    ((100.0, 200.0, True, True, False), 112.5),  # good -> bad: an onset to confirm
    ((112.5, 200.0, False, True, False), 125.0),
    ((125.0, 200.0, False, True, False), 137.5),
    ((137.5, 200.0, False, True, False), 150.0),  # 4 = Adaptive.onset
    ((150.0, 200.0, False, True, False), None),  # spent: back to the grid
    ((200.0, 300.0, False, True, False), None),  # a steady blocking costs nothing more
    ((300.0, 400.0, True, False, True), 312.5),  # bad -> good, the detector unsettled: a lift to confirm
    ((312.5, 400.0, False, False, True), 325.0),
    ((325.0, 400.0, False, False, False), 337.5),  # settled (the event ended): Adaptive.confirm_ok (2) more
    ((337.5, 400.0, False, False, False), 350.0),
    ((350.0, 400.0, False, False, False), None),  # then stop
]
EDGES = [
    ((0.0, 100.0, True, True, False), 12.5),
    ((12.5, 30.0, False, True, False), None),  # no room before the next slot: the grid run comes first
    ((90.0, 200.0, True, False, False), 102.5),  # back to ok, detector settled (a random failure): 2 more
    ((102.5, 200.0, False, False, False), 115.0),
    ((115.0, 200.0, False, False, False), None),
]


@pytest.mark.parametrize("table", [ONSET, EDGES], ids=["onset-then-lift", "edges"])
def test_pacer_brings_runs_forward_while_undecided_bounded(table: list[tuple[tuple[float, float, bool, bool,
                                                                               bool], float | None]]) -> None:
    pacer = Pacer()
    for (now, slot, changed, blocked, unsettled), want in table:
        got = pacer.early("t", now, interval=100.0, took=1.0, next_regular=slot, changed=changed, blocked=blocked,
                          unsettled=unsettled)
        assert got == (None if want is None else pytest.approx(want)), (now, got, want)


def test_pacer_floor_budget_and_lift_count() -> None:
    # never sooner than the run's own time x 1.25 + 0.25 s
    assert Pacer().early("t", 0.0, interval=8.0, took=2.0, next_regular=100.0, changed=True, blocked=True,
                         unsettled=False) == pytest.approx(2.75)
    # a lift gets Adaptive.lift early runs per change, the budget (24) caps them across changes
    pacer, runs, now = Pacer(Adaptive(budget=15.0, refill=0.0)), 0, 0.0
    for _ in range(3):
        changed = True
        while (at := pacer.early("t", now, interval=1000.0, took=0.0, next_regular=now + 1000.0,
                                 changed=changed, blocked=False, unsettled=True)) is not None:
            runs, now, changed = runs + 1, at, False
        now += 1000.0
    assert runs == 15  # 12 after the first change, 3 left in the bucket for the next two
    # the bucket refills a quarter of a run per interval
    assert pacer.early("t", now + 4000.0, interval=1000.0, took=0.0, next_regular=now + 5000.0, changed=True,
                       blocked=True, unsettled=False) is None  # refill 0 here
    refilling = Pacer(Adaptive(budget=1.0))
    assert refilling.early("t", 0.0, interval=100.0, took=0.0, next_regular=100.0, changed=True, blocked=True,
                           unsettled=False) is not None
    assert refilling.early("t", 12.5, interval=100.0, took=0.0, next_regular=100.0, changed=False, blocked=True,
                           unsettled=False) is None  # empty
    assert refilling.early("t", 412.5, interval=100.0, took=0.0, next_regular=500.0, changed=False, blocked=True,
                           unsettled=False) is not None  # 4 intervals later: one run earned


def test_simulate_paces_only_without_retests() -> None:
    regular = [(t * 100.0, "ok" if t < 3 else "bad") for t in range(6)]
    obs = simulate(regular, lambda t0, t: "bad" if t >= 300.0 else "ok", lambda s: s, 0, 15.0, adaptive=Adaptive(),
                   interval=100.0)
    assert [t for t, _, k in obs if k == 0 and t % 100] == [312.5, 325.0, 337.5, 350.0]
    with_retests = simulate(regular, lambda t0, t: "ok", lambda s: s, 2, 15.0, adaptive=Adaptive(), interval=100.0)
    assert all(t % 100 == 0 for t, _, k in with_retests if k == 0)


@pytest.mark.parametrize(
    ("blocking", "retesting", "paced"),
    [(False, False, "ok"), (None, False, None), ("throttling", False, "throttling"), ("tcp_ip", False, "tcp_ip"),
     (False, True, "ok"), (None, True, None), ("throttling", True, "throttling"), ("tcp_ip", True, "ok")],
)
def test_what_the_adaptive_interval_tracks(blocking: object, retesting: bool, paced: str | None) -> None:
    """Full runs see throttling; with re-tests on, the adaptive interval tracks only what they cannot see."""
    assert paced_outcome(run_outcome(blocking), retesting) == paced


def test_an_ongoing_event_paces_only_its_lift() -> None:
    """While an event is open its onset is decided: a change to a blocking gets no onset runs and a change
    back no confirm runs (an intermittent blocking emptied the bucket that way), but the lift is paced."""
    pacer = Pacer()
    kw: dict[str, Any] = {"interval": 100.0, "took": 0.0, "ongoing": True}
    assert pacer.early("t", 0.0, next_regular=100.0, changed=True, blocked=True, unsettled=False, **kw) is None
    assert pacer.early("t", 100.0, next_regular=200.0, changed=True, blocked=False, unsettled=False, **kw) is None
    assert pacer.early("t", 200.0, next_regular=300.0, changed=False, blocked=False, unsettled=True, **kw) == 212.5
    # without an open event, as before: the onset is confirmed
    assert Pacer().early("t", 0.0, next_regular=100.0, changed=True, blocked=True, unsettled=False,
                         interval=100.0, took=0.0) == 12.5


def test_with_retests_the_adaptive_interval_paces_what_they_cannot_see() -> None:
    """A throttling onset and lift: a re-test cannot see them (no throughput check), so no burst; the next
    regular runs (full runs) come early instead, as without re-tests."""
    regular: list[tuple[float, object]] = [(t * 100.0, "throttling" if 3 <= t < 6 else False) for t in range(9)]

    def full(t0: float, t: float) -> object:
        return "throttling" if 300.0 <= t < 600.0 else False

    obs = simulate(regular, lambda t0, t: False, outcome_of, 4, 15.0, adaptive=Adaptive(), interval=100.0,
                   run=(full, run_outcome))
    assert [t for t, _, k in obs if k] == []  # nothing a re-test can see changed
    early = [t for t, _, k in obs if k == 0 and t % 100]
    assert early[:4] == [312.5, 325.0, 337.5, 350.0]  # the onset, confirmed by full runs
    assert [t for t in early if t > 600.0] == [612.5, 625.0]  # the lift (no detector here: confirm runs)
    # a reachability change still gets its burst, and no early run
    obs = simulate([(0.0, False), (100.0, "tcp_ip"), (200.0, "tcp_ip")], lambda t0, t: "tcp_ip", outcome_of, 4, 15.0,
                   adaptive=Adaptive(), interval=100.0, run=(lambda t0, t: "tcp_ip", run_outcome))
    assert [k for _, _, k in obs] == [0, 0, 1, 2, 3, 4, 0]


def test_an_intermittent_blocking_ends_soon_after_its_quiet_outlasts_its_pauses() -> None:
    """The daemon's policy (re-tests on a change, and while the detector asks for them) on a flapping
    blocking whose pauses last up to 3 runs: one event, noticed ended within 2 intervals of the moment its
    quiet outlasted the longest pause (before: 12 good points were needed, ~8 intervals after the last
    blocked run)."""
    iv, phases = 300.0, "xxoooxoxxxooxoooxxoxxxoo" * 4
    pattern = "o" * 300 + phases + "o" * 40
    det, ids = Detector(Series("p", "t", "svc", "tcp", "tcp_ip")), itertools.count()
    closed: list[float] = []

    def asks(t: float, status: str, grid: bool, retest: bool) -> Asks:
        det.take(Point(t, f"m{next(ids)}", status, grid))  # type: ignore[arg-type]
        if det.n_closed and not closed:
            closed.append(t)
        return Asks(det.unsettled, det.unsettled, det.n_events > det.n_closed)

    regular = [(i * iv, "blocked" if c == "x" else "ok") for i, c in enumerate(pattern)]
    simulate(regular, lambda t0, t: regular[round(t0 / iv)][1], lambda s: s, 4, 15.0, asks, Adaptive(), iv)
    assert det.n_events == 1 and len(closed) == 1
    clear = (300 + phases.rindex("x") + 4) * iv  # the last blocked run + the longest pause
    assert clear < closed[0] <= clear + 2 * iv
