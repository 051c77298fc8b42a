"""Throttling detection against the lab's real policers (htb + short pfifo, by SNI).

Runs the throttling test inside the lab's client namespace
(``python -m probe.checks.throughput``); needs root. The full matrix, N times
each, is bench/throttling_matrix.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.lab

SNI = "web.telegram.test"
URL = f"https://{SNI}/large?bytes={{bytes}}"
URL_WHOLE = f"https://{SNI}/large"  # sent whole whatever the budget: stopped transfers leave data in the queue
PATH_RTT = ("latency", {"ms": 30})
Steps = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    from probe.lab import Lab

    with Lab("thrlab") as running:
        yield running


def _decide(lab: Any, direction: str = "down", url: str = URL) -> dict[str, Any]:
    from probe.lab import HOSTS

    argv = [sys.executable, "-m", "probe.checks.throughput", "--address", HOSTS[SNI].address, "--sni", SNI,
            "--url", url, "--direction", direction]
    done = lab.exec(lab.ns_client, argv, check=False, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    decision: dict[str, Any] = json.loads(done.stdout)["decision"]
    return decision


@pytest.mark.parametrize("rate_kbit", [64, 128, 512, 2000])
def test_policed_by_sni_is_detected_with_its_rate(lab: Any, rate_kbit: int) -> None:
    handle = lab.apply("throttle_sni", sni=SNI, rate_kbit=rate_kbit, direction="down")
    try:
        decision = _decide(lab)
    finally:
        lab.remove(handle)
    assert decision["blocking"] == "throttling", decision
    assert decision["direction"] == "down"
    assert decision["estimated_rate_kbit"] == pytest.approx(rate_kbit, rel=0.15)
    assert decision["bytes_used"] <= 512 * 1024 and decision["seconds_used"] <= 10.5


@pytest.mark.parametrize(
    ("technique", "params"),
    [("shape", {"rate_kbit": 1000}), ("shape", {"rate_kbit": 10_000}), ("shape", {"rate_kbit": 100_000}),
     ("loss", {"percent": 1}), ("loss", {"percent": 3}), ("latency", {"ms": 50, "jitter_ms": 20})],
)
def test_benign_conditions_are_not_throttling(lab: Any, technique: str, params: dict[str, Any]) -> None:
    handle = lab.apply(technique, **params)
    try:
        decision = _decide(lab)
    finally:
        lab.remove(handle)
    assert decision["blocking"] is False, decision


@pytest.mark.parametrize("only", ["up", "down"])
def test_one_way_throttling_reports_its_direction(lab: Any, only: str) -> None:
    handle = lab.apply("throttle_sni", sni=SNI, rate_kbit=256, direction=only)
    try:
        decision = _decide(lab, "both")
    finally:
        lab.remove(handle)
    assert decision["blocking"] == "throttling", decision
    assert decision["directions"][only]["blocking"] == "throttling"
    # A downstream policer also starves the upload's ACKs (the upload is then slower too, but
    # 10-80x faster than the policed direction): the direction reported is the policed one.
    assert decision["direction"] == only
    assert decision["estimated_rate_kbit"] == pytest.approx(256, rel=0.15)


def _decide_under(lab: Any, steps: Steps) -> dict[str, Any]:
    handles = []
    try:
        for technique, params in steps:
            handles.append(lab.apply(technique, **params))
        return _decide(lab, url=URL_WHOLE)
    finally:
        for handle in reversed(handles):
            lab.remove(handle)


def _link(mbit: float, limit: int) -> tuple[str, dict[str, Any]]:
    return ("bufferbloat", {"rate_kbit": mbit * 1000, "limit": limit})


HOME_LINKS: dict[str, Steps] = {
    "bloat1M-q300": [PATH_RTT, _link(1, 300)],
    "bloat2M-q1000": [PATH_RTT, _link(2, 1000)],
    "bloat5M-q1000": [PATH_RTT, _link(5, 1000)],
    "cross1M-q300": [PATH_RTT, _link(1, 300), ("cross_traffic", {})],
    "cross2M-q1000": [PATH_RTT, _link(2, 1000), ("cross_traffic", {})],
    "cross5M-q1000": [PATH_RTT, _link(5, 1000), ("cross_traffic", {})],
    "lte": [PATH_RTT, ("lte", {"rates_kbit": (4000, 1500, 6000, 2500), "period": 3.0, "limit": 1000})],
}


@pytest.mark.parametrize("steps", list(HOME_LINKS.values()), ids=list(HOME_LINKS))
def test_slow_home_links_with_deep_queues_are_not_throttling(lab: Any, steps: Steps) -> None:
    """Bufferbloat, the volunteer's own download, a radio link's changing rate: never flagged.

    A link shared with a saturating download may leave too few clean samples for a decision
    (cross1M: 2 of 20 inconclusive in the bench): inconclusive is allowed there, throttling never.
    """
    decision = _decide_under(lab, steps)
    assert decision["blocking"] != "throttling", decision
    if not any(technique == "cross_traffic" for technique, _ in steps):
        assert decision["blocking"] is False, decision


def test_policer_behind_a_bloated_home_link_is_detected(lab: Any) -> None:
    policer = ("throttle_sni", {"sni": SNI, "rate_kbit": 128, "direction": "down", "parent": "1:1"})
    decision = _decide_under(lab, [PATH_RTT, _link(5, 1000), policer])
    assert decision["blocking"] == "throttling", decision
    assert decision["estimated_rate_kbit"] == pytest.approx(128, rel=0.15)
