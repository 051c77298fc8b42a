"""The re-test policy (probe.analysis.retest): what counts as a change, what a re-test measures, no cascade."""

from __future__ import annotations

import pytest

from probe.analysis.retest import Tracker, outcome_of, retest_target, simulate
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
