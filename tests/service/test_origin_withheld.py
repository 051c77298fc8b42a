"""Content withheld by the origin (blocking "origin-withheld") is carried like every other blocking
type: a probe_blocking series, an event of its own type, the event's check kind."""

from __future__ import annotations

from probe.analysis.events import CHECK_OF_TYPE, RecordDetector, event_type
from probe.core.records import ProbeMeta, Verdict, verdict_record
from probe.service.metrics import BLOCKING_TYPES, MetricsState
from tests.service.test_metrics import check, value, verdict

META = ProbeMeta(probe_id="p1")
T0, STEP = 1_790_000_000.0, 300.0


def test_metrics_export_origin_withheld() -> None:
    assert "origin-withheld" in BLOCKING_TYPES
    state = MetricsState()
    state.observe([check("http"), verdict("origin-withheld", False)])
    assert value(state, "probe_blocking", target="t1", service="svc", type="origin-withheld") == 1.0
    state.observe([check("http"), verdict(False, True)])
    assert value(state, "probe_blocking", target="t1", service="svc", type="origin-withheld") == 0.0


def test_events_open_and_close_for_origin_withheld() -> None:
    assert event_type("origin-withheld") == "origin-withheld" and CHECK_OF_TYPE["origin-withheld"] == "http"
    detector = RecordDetector()
    timeline = [False] * 30 + ["origin-withheld"] * 12 + [False] * 40
    seen = {}
    for i, blocking in enumerate(timeline):
        record = verdict_record(Verdict("ch", "telegram", "messaging", blocking is False, blocking, "r", "x",
                                        T0 + i * STEP), META)
        for event in detector.feed([record]):
            seen[event.id] = event
    assert len(seen) == 1
    event = next(iter(seen.values()))
    assert event.type == "origin-withheld" and event.check == "http" and event.end_time is not None
