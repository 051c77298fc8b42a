"""RecordDetector: the daemon's run-by-run interface to the event detector."""

from __future__ import annotations

from probe.analysis.events import RecordDetector
from probe.core.records import ProbeMeta, Verdict, verdict_record

META = ProbeMeta(probe_id="p1")
T0, STEP = 1_790_000_000.0, 300.0


def _run(i: int, blocking: object) -> list[dict[str, object]]:
    accessible = blocking is False
    return [verdict_record(Verdict("tg", "telegram", "messaging", accessible, blocking, "r", "x", T0 + i * STEP),
                           META)]


def test_onset_then_lift_one_run_at_a_time() -> None:
    detector = RecordDetector()
    timeline = [False] * 30 + ["tcp_ip"] * 12 + [False] * 40
    seen: dict[str, object] = {}
    first_report_at = None
    for i, blocking in enumerate(timeline):
        for event in detector.feed(_run(i, blocking)):
            seen[event.id] = event
            first_report_at = first_report_at if first_report_at is not None else i
    assert len(seen) == 1
    event = next(iter(seen.values()))
    assert event.type == "tcp_ip" and event.target == "tg" and event.probe_id == "p1"  # type: ignore[attr-defined]
    assert event.start_low == T0 + 29 * STEP and event.start_high == T0 + 30 * STEP  # type: ignore[attr-defined]
    assert event.end_time is not None  # type: ignore[attr-defined]
    assert T0 + 41 * STEP <= event.end_time <= T0 + 42 * STEP  # type: ignore[attr-defined]
    assert first_report_at is not None and first_report_at <= 30 + 5  # reported while ongoing


def test_outages_and_noise_open_nothing() -> None:
    detector = RecordDetector()
    timeline = [False] * 20 + [None] * 10 + [False] * 10 + ["dns"] + [False] * 30
    touched = [e for i, b in enumerate(timeline) for e in detector.feed(_run(i, b))]
    assert touched == []


def test_unsettled_while_an_onset_or_a_lift_builds_up_and_settled_otherwise() -> None:
    """The daemon re-tests while the detector is unsettled (probe.analysis.retest): after the first
    good runs of a steady event, until it ends; never during a steady state or for noise."""
    detector = RecordDetector()
    states: list[bool] = []
    timeline = [False] * 30 + ["tcp_ip"] + [False] * 3 + ["tcp_ip"] * 12 + [False] * 20 + ["tcp_ip"] * 3 + [False]
    for i, blocking in enumerate(timeline):
        detector.feed(_run(i, blocking))
        states.append(detector.unsettled("tg"))
    assert not any(states[:46])  # quiet, a random failure (its change burst decides it), a steady blocking
    assert states[45] is False  # blocked throughout an open event: nothing to decide
    assert states[46] is True  # the first good run of a steady event: a lift may be under way
    assert states[65] is False  # the event ended: settled
    # a short blocking (3 runs: a phase of an intermittent one) is not steady: its pause asks for nothing
    assert states[-1] is False
    assert detector.unsettled("other") is False


def test_a_throttling_series_never_asks_for_retests() -> None:
    """A re-test runs no throughput check: it could not settle a throttling series."""
    detector = RecordDetector()
    for i, blocking in enumerate([False] * 10 + ["throttling"]):
        detector.feed(_run(i, blocking))
    assert detector.unsettled("tg") is False


def test_a_throttling_lift_asks_for_full_runs_not_retests() -> None:
    """A re-test runs no throughput check: the lift of a throttling event asks for full runs (the adaptive
    interval's early runs), in the series a re-test cannot see, and its event counts as ongoing there."""
    detector = RecordDetector()
    for i, blocking in enumerate([False] * 30 + ["throttling"] * 12 + [False]):
        detector.feed(_run(i, blocking))
    assert detector.ongoing("tg") and detector.ongoing("tg", seen=False) and not detector.ongoing("tg", seen=True)
    assert detector.unsettled("tg") is False  # what a re-test can see: nothing to decide
    assert detector.unsettled("tg", seen=False) is True and detector.unsettled("tg", seen=None) is True
