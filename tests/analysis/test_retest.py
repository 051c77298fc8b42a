"""The re-test policy (probe.analysis.retest): what counts as a change, what a re-test measures, no cascade."""

from __future__ import annotations

import pytest

from probe.analysis.retest import Adaptive, Pacer, Tracker, outcome_of, retest_target, simulate
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
