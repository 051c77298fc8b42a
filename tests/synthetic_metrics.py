"""A daemon's ``/metrics`` for the default targets, rendered from synthetic records (no network).

What ``probe daemon`` serves (:func:`probe.service.metrics.render` with the daemon's registry:
build info, health, process metrics) after one run of every target of probe/data/targets.yaml,
each check answering with the phases it really times. ``failures`` failure reasons per check and
target (counters keep every reason ever seen) and ``events`` ongoing events make the heavier
realistic case; ``extras`` adds one throughput and one circumvention target, and turns the upload
to a collector on, so that every family the daemon can export appears (docs/metrics.md is checked
against it); ``upload`` turns only the upload on (a fleet probe).
"""

from __future__ import annotations

from typing import Any

from prometheus_client.samples import Sample

from probe.core import config, failures
from probe.core.records import Event, format_time
from probe.service.metrics import MetricsState, registry_for, render

NOW = 1_800_000_000.0
#: The phases each check times (``test_keys.timings``), as the checks record them.
PHASES = {
    "dns": ("resolve_a", "resolve_aaaa"),
    "tcp": ("connect",),
    "tls": ("connect", "tls_handshake"),
    "http": ("connect", "tls_handshake", "http_round_trip"),
    "quic": ("quic_handshake",),
    "throughput": ("transfer",),
    "circumvention": ("connect",),
}
REASONS = ("connection_reset", "generic_timeout_error", "dns_nxdomain_error", "ssl_invalid_hostname")


def _record(target: str, service: str, test_name: str, ok: bool, *, role: str = "target",
            failure: str | None = None, **keys: Any) -> dict[str, Any]:
    return {
        "record_type": "check", "target": target, "service": service, "test_name": test_name, "role": role,
        "ok": ok, "failure": failure, "measurement_start_time": format_time(NOW), "test_runtime": 0.2,
        "test_keys": {"timings": {p: 0.05 for p in PHASES.get(test_name, ())}, **keys},
    }


def _verdict(target: str, service: str, blocking: object) -> dict[str, Any]:
    return {
        "record_type": "verdict", "target": target, "service": service, "test_name": "verdict", "role": "target",
        "ok": blocking is False, "failure": None, "measurement_start_time": format_time(NOW), "test_runtime": 0.0,
        "test_keys": {"blocking": blocking, "accessible": blocking is False},
    }


def daemon_state(*, failures_per_check: int = 0, events: int = 0, extras: bool = False, upload: bool = False,
                 ) -> MetricsState:
    targets = [(t.name, t.service, t.checks) for t in config.load(config.DEFAULT_TARGETS).targets]
    if extras:
        targets += [("extra-throughput", "extra", ("tls", "throughput")), ("extra-vpn", "extra", ("circumvention",))]
    state = MetricsState(clock=lambda: NOW)
    state.set_targets((name, service, 300.0) for name, service, _ in targets)
    assert set(REASONS) <= failures.KNOWN
    for name, service, checks in targets:
        records = []
        for check in checks:
            keys: dict[str, Any] = {}
            if check == "tls":
                keys["cert_not_after"] = NOW + 86400 * 60
            if check == "throughput":
                keys["rate_bytes_per_second"] = 2e6
                records.append(_record(name, service, check, True, role="control", **keys))
            if check == "circumvention":
                keys.update(protocol="openvpn", status="answered")
            records.append(_record(name, service, check, True, **keys))
            for reason in REASONS[:failures_per_check]:  # earlier runs' failures, still counted
                records.append(_record(name, service, check, False, failure=reason))
        records.append(_verdict(name, service, False))
        state.observe(records)
    state.set_events(Event(id=f"e{i}", probe_id="p", target=name, service=service, check="tcp", type="tcp_ip",
                           start_time=NOW - 3600, start_low=NOW - 3900, start_high=NOW - 3600, end_time=None,
                           end_low=None, end_high=None, confidence=1.0)
                     for i, (name, service, _) in enumerate(targets[:events]))
    if extras or upload:
        def upload_on(h: Any) -> None:
            h.upload_enabled = True

        state.update_health(upload_on)
    return state


def daemon_metrics(**kwargs: Any) -> str:
    """The text a scrape of the daemon's ``/metrics`` returns (see :func:`daemon_state`)."""
    state = daemon_state(**kwargs)
    return render(state, registry=registry_for(state)).decode()


def relabelled(text: str, rules: list[dict[str, Any]], extra: tuple[str, ...] = ("up",)) -> list[Sample]:
    """The samples of exposition ``text``, plus vmagent's own ``extra`` series (value 1), that pass
    ``keep``/``drop`` relabel ``rules`` (Prometheus semantics: source labels joined with ``;``, the
    regex anchored): what vmagent's ``-remoteWrite.urlRelabelConfig`` lets through."""
    import re

    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    samples += [Sample(name, {}, 1.0) for name in extra]
    out = []
    for sample in samples:
        labels = {**sample.labels, "__name__": sample.name}
        for rule in rules:
            value = ";".join(labels.get(src, "") for src in rule["source_labels"])
            if (re.fullmatch(rule.get("regex", "(.*)"), value) is not None) != (rule["action"] == "keep"):
                break
        else:
            out.append(sample)
    return out
