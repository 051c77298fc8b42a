"""The collector's upload lag (``probe_collector_upload_lag_seconds``) on a real PostgreSQL: the time
from each new measurement's start to its storing, a retried measurement not counted twice; and
docs/metrics.md lists every family of the collector's /metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import prometheus_client as prom
from prometheus_client.parser import text_string_to_metric_families

from probe.fleet.collector import Metrics
from probe.fleet.enrol import enrol
from probe.fleet.localpg import CollectorProcess, sample_measurement
from tests.fleet.test_collector import post
from tests.service.test_metrics_docs import DOC, exported_families

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


def test_every_collector_family_is_documented() -> None:
    """docs/metrics.md's collector sections list exactly the families of the collector's /metrics."""
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `(probe_[a-z_]+)` \|", text[text.index("\n## Collector"):], re.M))
    exported = exported_families(prom.generate_latest(Metrics().registry).decode())
    assert {name for name in exported if not name.endswith("_created")} == documented
