"""probe.analysis.service_state: per-target verdicts rolled up into one state per service."""

from __future__ import annotations

import pytest

from probe.analysis.service_state import SERVICE_STATES, service_states, target_state


@pytest.mark.parametrize(("blocking", "accessible", "inconclusive", "state"), [
    (None, True, False, "ok"),
    (None, None, True, "inconclusive"),
    (None, False, True, "inconclusive"),
    ("throttling", True, False, "throttled"),
    ("origin-withheld", False, False, "origin-withheld"),
    ("tcp_ip", False, False, "blocked"),
    ("dns", False, False, "blocked"),
    ("circumvention", False, False, "blocked"),
    (None, False, False, "blocked"),  # not accessible, yet neither a type nor inconclusive
])
def test_target_state(blocking: str | None, accessible: bool | None, inconclusive: bool, state: str) -> None:
    assert target_state(blocking, accessible, inconclusive) == state


@pytest.mark.parametrize(("targets", "expected"), [
    ([("a", "ok"), ("a", "ok")], "ok"),
    ([("a", "ok"), ("a", "inconclusive")], "inconclusive"),
    ([("a", "inconclusive"), ("a", "origin-withheld")], "origin-withheld"),
    ([("a", "origin-withheld"), ("a", "throttled"), ("a", "ok")], "throttled"),
    ([("a", "throttled"), ("a", "blocked"), ("a", "inconclusive")], "blocked"),
    ([("a", "ok"), ("a", "blocked")], "blocked"),
])
def test_service_state_is_the_highest_ranked_target_state(targets: list[tuple[str, str]], expected: str) -> None:
    assert service_states(targets) == {"a": expected}
    assert service_states(reversed(targets)) == {"a": expected}  # the order of the targets does not matter


def test_services_apart() -> None:
    assert service_states([("a", "blocked"), ("b", "ok"), ("c", "inconclusive"), ("b", "throttled")]) == \
        {"a": "blocked", "b": "throttled", "c": "inconclusive"}
    assert service_states([]) == {}
    assert SERVICE_STATES[0] == "blocked" and SERVICE_STATES[-1] == "ok"
