"""Metrics built from records: values, bounded labels, stale targets, and ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from probe.core import failures
from probe.core.records import Event, format_time, mark_retest
from probe.service.metrics import BLOCKING_TYPES, MetricsState, registry_for, render

NOW = 1_800_000_000.0


def check(test_name: str, ok: bool = True, *, target: str = "t1", role: str = "target", failure: str | None = None,
          runtime: float = 0.1, **keys: Any) -> dict[str, Any]:
    return {
        "record_type": "check", "target": target, "service": "svc", "test_name": test_name, "role": role,
        "ok": ok, "failure": failure, "measurement_start_time": format_time(NOW), "test_runtime": runtime,
        "test_keys": {"timings": keys.pop("timings", {}), **keys},
    }


def verdict(blocking: object, accessible: object, target: str = "t1") -> dict[str, Any]:
    return {
        "record_type": "verdict", "target": target, "service": "svc", "test_name": "verdict", "role": "target",
        "ok": blocking is False, "failure": None, "measurement_start_time": format_time(NOW), "test_runtime": 0.0,
        "test_keys": {"blocking": blocking, "accessible": accessible},
    }


def samples(state: MetricsState) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(render(state).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(state: MetricsState, name: str, **labels: str) -> float | None:
    return samples(state).get((name, frozenset(labels.items())))


def run_records() -> list[dict[str, Any]]:
    return [
        check("dns", timings={"resolve_a": 0.02, "resolve_aaaa": 0.03}),
        check("tcp", timings={"connect": 0.01}),
        check("tcp", False, failure="connection_reset", timings={"connect": 0.2}),
        check("tls", timings={"connect": 0.01, "tls_handshake": 0.05}, cert_not_after=NOW + 86400),
        check("tls", role="control", cert_not_after=NOW + 5),
        check("http", False, failure="unknown_failure: weird 10.1.2.3 thing"),
        check("throughput", rate_bytes_per_second=2e6),
        check("throughput", role="control", rate_bytes_per_second=8e6),
        check("circumvention", protocol="openvpn", status="blocked"),
        check("circumvention", protocol="wireguard", status="silent"),
        verdict("tls", False),
    ]


def test_values_from_one_run() -> None:
    state = MetricsState(clock=lambda: NOW + 1)
    state.observe(run_records())
    v = lambda name, **labels: value(state, name, target="t1", service="svc", **labels)  # noqa: E731
    # any successful target-role result counts as reachable (partial failures do not block)
    assert v("probe_reachable", check="tcp") == 1.0
    assert v("probe_reachable", check="http") == 0.0
    # durations: the slowest target-role value per phase, plus the check's total
    assert v("probe_check_duration_seconds", check="tcp", phase="connect") == 0.2
    assert v("probe_check_duration_seconds", check="dns", phase="resolve_aaaa") == 0.03
    assert v("probe_check_duration_seconds", check="dns", phase="total") == 0.1
    assert v("probe_checks_total", check="tcp") == 2.0
    assert v("probe_check_failures_total", check="tcp", failure="connection_reset") == 1.0
    assert v("probe_check_failures_total", check="http", failure="unknown_failure") == 1.0
    assert v("probe_blocking", type="tls") == 1.0
    assert all(v("probe_blocking", type=t) == 0.0 for t in BLOCKING_TYPES if t != "tls")
    assert v("probe_accessible") == 0.0
    assert v("probe_throughput_bytes_per_second", role="target") == 2e6
    assert v("probe_throughput_bytes_per_second", role="control") == 8e6
    assert v("probe_tls_cert_expiry_timestamp_seconds") == NOW + 86400  # the control's certificate is ignored
    assert v("probe_last_check_timestamp_seconds") == NOW + 1
    assert v("probe_circumvention_reachable", protocol="openvpn") == 0.0
    assert v("probe_circumvention_reachable", protocol="wireguard") is None  # silent: neither
    assert v("probe_circumvention_status", protocol="wireguard", status="silent") == 1.0
    assert value(state, "probe_build_info", version=__import__("probe").__version__,
                 schema_version="1.0.0", python_version=__import__("platform").python_version()) == 1.0


def test_counters_accumulate_and_gauges_follow_the_latest_run() -> None:
    state = MetricsState()
    state.observe(run_records())
    state.observe([check("tcp", False, failure="connection_reset"), verdict(False, True)])
    assert value(state, "probe_check_failures_total", target="t1", service="svc", check="tcp",
                 failure="connection_reset") == 2.0
    assert value(state, "probe_reachable", target="t1", service="svc", check="tcp") == 0.0
    assert value(state, "probe_reachable", target="t1", service="svc", check="http") is None
    # the blocking type seen before is still exported, now 0
    assert value(state, "probe_blocking", target="t1", service="svc", type="tls") == 0.0
    assert value(state, "probe_accessible", target="t1", service="svc") == 1.0


def test_a_retest_keeps_what_it_does_not_measure() -> None:
    state = MetricsState()
    state.observe([check("tcp"), check("throughput", rate_bytes_per_second=2e6), verdict("throttling", True)])
    state.observe(mark_retest([check("tcp"), verdict(False, True)], "v1", 1))  # no throughput check
    v = lambda name, **labels: value(state, name, target="t1", service="svc", **labels)  # noqa: E731
    assert v("probe_blocking", type="throttling") == 1.0
    assert v("probe_throughput_bytes_per_second", role="target") == 2e6
    assert v("probe_checks_total", check="tcp") == 2.0  # otherwise it counts like any run
    state.observe(mark_retest([check("tcp", False, failure="connection_reset"), verdict("tcp_ip", False)], "v1", 2))
    assert v("probe_blocking", type="tcp_ip") == 1.0 and v("probe_blocking", type="throttling") == 0.0
    state.observe([check("tcp"), verdict(False, True)])  # a regular run without throttling: it ends
    assert v("probe_blocking", type="throttling") == 0.0
    assert v("probe_throughput_bytes_per_second", role="target") is None


def test_inconclusive_verdict() -> None:
    state = MetricsState()
    state.observe([verdict(None, None)])
    assert value(state, "probe_verdict_inconclusive", target="t1", service="svc") == 1.0
    assert value(state, "probe_blocking", target="t1", service="svc", type="dns") == 0.0


def test_failure_label_is_bounded_to_the_vocabulary() -> None:
    state = MetricsState()
    messy = [check("tcp", False, failure=f"unknown_failure: message {i} from 192.0.2.{i}") for i in range(50)]
    state.observe([*messy, check("tcp", False, failure="made_up_failure"), verdict(False, True)])
    labels = {dict(k[1]).get("failure") for k in samples(state) if k[0] == "probe_check_failures_total"}
    assert labels == {"unknown_failure"}
    assert labels <= failures.KNOWN | {"unknown_failure", "none"}
    assert b"192.0.2" not in render(state)


def test_unexpected_label_values_fold_into_other() -> None:
    state = MetricsState()
    state.observe([check('we"ird\ncheck'), verdict("a type with spaces and {braces}", False)])
    text = render(state).decode()
    assert 'check="other"' in text and 'type="other"' in text


def test_reload_drops_stale_targets_and_events() -> None:
    state = MetricsState()
    state.observe([check("tcp", target="old"), verdict(False, True, target="old")])
    state.observe([check("tcp", target="kept"), verdict(False, True, target="kept")])
    state.set_events([Event("e", "p", "old", "svc", "tcp", "tcp_ip", NOW, NOW, NOW, None, None, None, 0.9)])
    state.retain(["kept"])
    text = render(state).decode()
    assert 'target="old"' not in text and 'target="kept"' in text


def test_events_export_only_ongoing_with_earliest_start() -> None:
    state = MetricsState()
    state.set_events([
        Event("a", "p", "t1", "svc", "tcp", "tcp_ip", NOW + 10, NOW, NOW, None, None, None, 0.9),
        Event("b", "p", "t1", "svc", "tls", "tcp_ip", NOW, NOW, NOW, None, None, None, 0.9),
        Event("c", "p", "t1", "svc", "dns", "dns", NOW, NOW, NOW, NOW + 5, NOW, NOW, 0.9),
    ])
    assert value(state, "probe_event_active", target="t1", service="svc", type="tcp_ip") == 1.0
    assert value(state, "probe_event_start_timestamp_seconds", target="t1", service="svc", type="tcp_ip") == NOW
    assert value(state, "probe_event_active", target="t1", service="svc", type="dns") is None


def test_series_per_target_stay_bounded_over_many_runs() -> None:
    state = MetricsState()
    for i in range(200):
        state.observe([check("tcp", i % 2 == 0, failure=None if i % 2 == 0 else "connection_reset",
                             timings={"connect": 0.01}),
                       check("http", False, failure=f"unknown_failure: {i}"), verdict("tcp_ip", False)])
    per_target = [k for k in samples(state) if dict(k[1]).get("target") == "t1"]
    assert len(per_target) < 40


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_output_passes_promtool_check_metrics() -> None:
    state = MetricsState()
    state.observe(run_records())
    state.set_events([Event("e", "p", "t1", "svc", "tls", "tls", NOW, NOW, NOW, None, None, None, 0.9)])
    state.health.lag.observe(0.02)
    done = subprocess.run(["promtool", "check", "metrics"], input=render(state), capture_output=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == b"" and done.stderr.strip() == b""


def services(state: MetricsState) -> dict[tuple[str, str], float]:
    """``probe_service_state`` by (service, state)."""
    return {(labels["service"], labels["state"]): v for (name, pairs), v in samples(state).items()
            if name == "probe_service_state" for labels in [dict(pairs)]}


def test_service_state_is_one_series_per_service_and_follows_the_verdicts() -> None:
    state = MetricsState(clock=lambda: NOW)
    state.observe([verdict(False, True, target="t1")], finished_at=NOW - 60)
    state.observe([verdict(None, None, target="t2")], finished_at=NOW)
    assert services(state) == {("svc", "inconclusive"): 1.0}  # one series per service: its state
    assert value(state, "probe_last_result_timestamp_seconds") == NOW
    state.observe([verdict("tcp_ip", False, target="t2")], finished_at=NOW + 30)
    assert services(state) == {("svc", "blocked"): 1.0}
    assert value(state, "probe_last_result_timestamp_seconds") == NOW + 30
    state.retain(["t1"])  # t2 no longer configured: the service is what t1 says
    assert services(state) == {("svc", "ok"): 1.0}


def test_no_service_summary_before_a_verdict_nor_in_a_probe_answer() -> None:
    state = MetricsState(clock=lambda: NOW)
    assert not any(name.startswith(("probe_service_state", "probe_last_result")) for name, _ in samples(state))
    state.observe([verdict("tcp_ip", False)])
    on_demand = render(state, registry=registry_for(state, daemon=False, process=False, info=False)).decode()
    assert "probe_service_state" not in on_demand and "probe_last_result" not in on_demand
