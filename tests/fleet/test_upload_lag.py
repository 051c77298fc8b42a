"""The collector's upload lag (``probe_collector_upload_lag_seconds``) on a real PostgreSQL: the time
from each new measurement's start to its storing, a retried measurement not counted twice."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from probe.fleet.enrol import enrol
from probe.fleet.localpg import CollectorProcess, sample_measurement
from tests.fleet.test_collector import post

Start = Callable[..., CollectorProcess]


def lag_histogram(text: str) -> dict[str, float]:
    """``le`` -> cumulative count, plus ``count`` and ``sum``, of the collector's upload lag."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "probe_collector_upload_lag_seconds":
            for s in family.samples:
                key = s.labels["le"] if s.name.endswith("_bucket") else s.name.rsplit("_", 1)[1]
                out[key] = s.value
    return out


def test_upload_lag_counts_each_new_measurement_once(db: str, token: str, collectors: Start) -> None:
    collector = collectors(db, "--events-every", "0")
    credential = enrol([collector.url], token, probe_id="lag-probe").credential
    assert lag_histogram(httpx.get(f"{collector.url}/metrics", timeout=10).text)["count"] == 0
    now = time.time()
    backlog = [sample_measurement("lag-probe", now - 2 * 3600), sample_measurement("lag-probe", now - 40 * 60)]
    fresh = sample_measurement("lag-probe", now - 2)
    assert post(collector.url, credential, backlog).json() == {"accepted": 2, "duplicates": 0}
    # a retry of the backlog with one new measurement: only the new one is measured
    assert post(collector.url, credential, [*backlog, fresh]).json() == {"accepted": 1, "duplicates": 2}
    lag = lag_histogram(httpx.get(f"{collector.url}/metrics", timeout=10).text)
    assert lag["count"] == 3
    # start times have whole seconds; a generous margin for a slow upload under load
    assert (lag["60.0"], lag["1800.0"], lag["3600.0"], lag["10800.0"], lag["+Inf"]) == (1, 1, 2, 3, 3), lag
    assert 2 * 3600 + 40 * 60 <= lag["sum"] <= 2 * 3600 + 40 * 60 + 2 + 3 * 60, lag["sum"]
