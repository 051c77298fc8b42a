"""Prometheus metrics built from records: the daemon's ``/metrics`` and ``/probe`` output.

Why a custom collector over current state, not ``Gauge``/``Counter`` objects: the
daemon keeps one small snapshot per configured target (the latest run) plus a few
counters, and renders them at scrape time. When a reload removes a target,
:meth:`MetricsState.retain` drops its snapshot and every series of that target
disappears at once; with labelled ``Gauge`` children we would have to remember and
``remove()`` every label combination ever set. Cardinality is bounded by
construction: the label values come from the configuration (target, service), from
code (check, phase, protocol, status, type) or from the fixed failure vocabulary
(``failures.metric_label``), never from the network.

Everything here is fed with record dicts (``probe.core.records.check_record`` /
``verdict_record``) and ``probe.core.records.Event`` objects, so the store, the exports
and the metrics all say the same thing. docs/metrics.md documents every family,
its labels and the series per target.

Thread safety: the HTTP server scrapes from its own thread while the asyncio loop
updates; a lock guards the state and :meth:`collect` renders from a copy.
"""

from __future__ import annotations

import bisect
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString as _go_float

from probe import __version__
from probe.analysis.service_state import service_states, target_state
from probe.core import failures
from probe.core.records import SCHEMA_VERSION, Event, parse_time, retest_of
from probe.storage.store import REASONS

#: Blocking types always exported (0 or 1) so that ``probe_blocking == 1`` alerts see a
#: series change value instead of appearing from nothing. See docs/verdicts.md.
BLOCKING_TYPES: Final[tuple[str, ...]] = (
    "dns", "tcp_ip", "tls", "http-failure", "http-diff", "origin-withheld", "quic", "throttling",
)
CIRCUMVENTION_STATUSES: Final[tuple[str, ...]] = ("answered", "silent", "blocked", "inconclusive")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")
#: Scheduler lag buckets (seconds): from "on time" to "a whole default interval late".
LAG_BUCKETS: Final[tuple[float, ...]] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Event-loop stall and store-write buckets (seconds): a stall of 0.1 s already delays every check's timer.
STALL_BUCKETS: Final[tuple[float, ...]] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _bounded(value: object, fallback: str = "other") -> str:
    """A label value from code-defined strings; anything unexpected folds into ``other``."""
    text = str(value)
    return text if _SAFE_VALUE.match(text) else fallback


@dataclass
class TargetSnapshot:
    """What the latest run of one target said (replaced whole at every run)."""

    service: str
    reachable: dict[str, float] = field(default_factory=dict)  # check -> 0/1
    durations: dict[tuple[str, str], float] = field(default_factory=dict)  # (check, phase) -> s
    throughput: dict[str, float] = field(default_factory=dict)  # role -> bytes/s
    cert_expiry: float | None = None
    circumvention: dict[str, str] = field(default_factory=dict)  # protocol -> status
    blocking: str | None = None  # the current blocking type, None for none/inconclusive
    accessible: bool | None = None
    inconclusive: bool = False
    has_verdict: bool = False
    last_check: float = 0.0
    runtime: float | None = None
    #: every blocking type ever seen on this target, so that a type that ends shows 0
    seen_types: set[str] = field(default_factory=set)
    checks_total: dict[str, int] = field(default_factory=dict)  # check -> count
    failures_total: dict[tuple[str, str], int] = field(default_factory=dict)  # (check, failure) -> count


@dataclass(frozen=True)
class EventKey:
    target: str
    service: str
    type: str


class Histogram:
    """A fixed-bucket histogram we own, so that it renders inside the custom collector."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


#: Why an upload to the collector failed: the ``reason`` label of ``probe_upload_errors_total``
#: (the fleet's uploader, probe.fleet.upload, counts by these; docs/metrics.md says each).
UPLOAD_ERRORS: Final = ("unreachable", "timeout", "server_error", "unavailable", "rate_limited", "rejected",
                        "unauthorized", "forbidden", "protocol")


@dataclass
class Health:
    """The daemon's own health, set by the scheduler."""

    in_flight: int = 0
    queue_depth: int = 0
    targets: int = 0
    store_write_errors: dict[str, int] = field(default_factory=dict)  # reason -> failed store calls
    records_written: int = 0  # records committed
    store_dropped_by: dict[str, int] = field(default_factory=dict)  # why -> records lost
    store_buffered: int = 0  # records handed over and not committed yet
    store_buffered_bytes: int = 0
    store_buffer_limit: int = 0
    store_writable: bool = True
    skipped: int = 0
    measurements: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0, "timeout": 0})
    retests: dict[str, int] = field(default_factory=lambda: {"run": 0, "dropped": 0})
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    loop_lag: Histogram = field(default_factory=lambda: Histogram(STALL_BUCKETS))
    store_seconds: Histogram = field(default_factory=lambda: Histogram(STALL_BUCKETS))
    store_pending: int = 0
    reload_ok: bool = True
    reload_success_time: float = field(default_factory=time.time)
    start_time: float = field(default_factory=time.time)
    upload_enabled: bool = False  # settings.upload.enabled: the upload families are exported
    upload_pending: int = 0  # target runs not uploaded yet
    upload_last_success: float = 0.0
    upload_errors: dict[str, int] = field(default_factory=dict)
    upload_expired: int = 0  # measurements deleted at the queue's bound before they were uploaded


class MetricsState:
    """All exported state: per-target snapshots, ongoing events and daemon health."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.targets: dict[str, TargetSnapshot] = {}
        self.events: dict[EventKey, float] = {}  # ongoing events -> earliest start time
        self.intervals: dict[str, tuple[str, float]] = {}  # configured target -> (service, interval)
        self.rendered: dict[str, dict[str, str]] = {}  # target -> family -> exposition lines
        self.health = Health()

    # -- feeding -------------------------------------------------------------------

    def observe(self, records: Iterable[Mapping[str, Any]], finished_at: float | None = None) -> None:
        """One target run's records (its check records, then its verdict): replace its snapshot."""
        by_target: dict[str, list[Mapping[str, Any]]] = {}
        for r in records:
            by_target.setdefault(str(r["target"]), []).append(r)
        now = self.clock() if finished_at is None else finished_at
        with self.lock:
            for name, recs in by_target.items():
                self._observe_target(name, recs, now)

    def _observe_target(self, name: str, records: list[Mapping[str, Any]], now: float) -> None:
        old = self.targets.get(name)
        snap = TargetSnapshot(service=str(records[0].get("service", "")), last_check=now)
        if old is not None:
            snap.seen_types, snap.checks_total, snap.failures_total = (
                old.seen_types, old.checks_total, old.failures_total,
            )
        cert_expiries: list[float] = []
        starts: list[float] = []
        ends: list[float] = []
        retest = False
        for r in records:
            keys: Mapping[str, Any] = r.get("test_keys") or {}
            if r.get("record_type") == "verdict":
                self._observe_verdict(snap, keys)
                retest = retest_of(r) is not None
                continue
            check = _bounded(r.get("test_name", "unknown"))
            role = "control" if r.get("role") == "control" else "target"
            start = _start(r)
            if start is not None:
                starts.append(start)
                ends.append(start + float(r.get("test_runtime") or 0.0))
            if check == "throughput":
                rate = keys.get("rate_bytes_per_second")
                if isinstance(rate, int | float):
                    snap.throughput[role] = float(rate)
            if role != "target":
                continue
            ok = bool(r.get("ok"))
            snap.reachable[check] = max(snap.reachable.get(check, 0.0), 1.0 if ok else 0.0)
            snap.checks_total[check] = snap.checks_total.get(check, 0) + 1
            if not ok:
                key = (check, failures.metric_label(r.get("failure")))
                snap.failures_total[key] = snap.failures_total.get(key, 0) + 1
            timings = keys.get("timings") or {}
            for phase, seconds in (*timings.items(), ("total", r.get("test_runtime"))):
                if isinstance(seconds, int | float):
                    dkey = (check, _bounded(phase))
                    snap.durations[dkey] = max(snap.durations.get(dkey, 0.0), float(seconds))
            expiry = keys.get("cert_not_after")
            if check == "tls" and ok and isinstance(expiry, int | float):
                cert_expiries.append(float(expiry))
            if check == "circumvention" and "protocol" in keys:
                status = str(keys.get("status"))
                snap.circumvention[_bounded(keys["protocol"])] = (
                    status if status in CIRCUMVENTION_STATUSES else "inconclusive"
                )
        if cert_expiries:
            snap.cert_expiry = min(cert_expiries)
        elif old is not None and "tls" not in snap.reachable:
            snap.cert_expiry = old.cert_expiry  # keep the last known expiry across TLS-less runs
        if starts:
            snap.runtime = max(ends) - min(starts)
        if retest and old is not None:
            _keep_unmeasured(snap, old)
        self.targets[name] = snap
        self.rendered[name] = _target_lines(name, snap)

    @staticmethod
    def _observe_verdict(snap: TargetSnapshot, keys: Mapping[str, Any]) -> None:
        snap.has_verdict = True
        blocking, accessible = keys.get("blocking"), keys.get("accessible")
        snap.accessible = accessible if isinstance(accessible, bool) else None
        snap.inconclusive = blocking is None
        if isinstance(blocking, str) and blocking:
            snap.blocking = _bounded(blocking)
            snap.seen_types.add(snap.blocking)

    def set_events(self, events: Iterable[Event]) -> None:
        """Replace the ongoing events (the detector's current view)."""
        ongoing: dict[EventKey, float] = {}
        for e in events:
            if not e.ongoing:
                continue
            key = EventKey(e.target, e.service, _bounded(e.type))
            ongoing[key] = min(ongoing.get(key, e.start_time), e.start_time)
        with self.lock:
            self.events = ongoing

    def retain(self, names: Iterable[str]) -> None:
        """Forget targets no longer configured (after a reload): their series vanish."""
        keep = set(names)
        with self.lock:
            for name in [n for n in self.targets if n not in keep]:
                del self.targets[name]
                self.rendered.pop(name, None)
            self.events = {k: v for k, v in self.events.items() if k.target in keep}

    def set_targets(self, targets: Iterable[tuple[str, str, float]]) -> None:
        """The configured (name, service, interval) triples; drops every other target's series."""
        configured = {name: (service, interval) for name, service, interval in targets}
        self.retain(configured)
        with self.lock:
            self.intervals = configured
            self.health.targets = len(configured)

    def update_health(self, fn: Callable[[Health], None]) -> None:
        with self.lock:
            fn(self.health)

    def set_reload(self, ok: bool) -> None:
        with self.lock:
            self.health.reload_ok = ok
            if ok:
                self.health.reload_success_time = self.clock()


def _keep_unmeasured(snap: TargetSnapshot, old: TargetSnapshot) -> None:
    """A re-test skips the throughput family: keep the last regular run's rates and throttling verdict."""
    snap.throughput = old.throughput
    if old.blocking == "throttling" and snap.blocking is None and snap.accessible:
        snap.blocking = "throttling"


def _start(record: Mapping[str, Any]) -> float | None:
    try:
        return parse_time(str(record["measurement_start_time"]))
    except (KeyError, ValueError):
        return None


#: Per-target families, in exposition order: (name, type, help).
FAMILIES: Final[tuple[tuple[str, str, str], ...]] = (
    ("probe_reachable", "gauge", "1 if any target-role result of this check succeeded in the target's last run."),
    ("probe_check_duration_seconds", "gauge", "Slowest target-role duration of this check phase in the last run."),
    ("probe_checks_total", "counter", "Target-role check results, successful or not."),
    ("probe_check_failures_total", "counter", "Failed target-role check results by failure (fixed vocabulary)."),
    ("probe_blocking", "gauge", "1 if the last verdict says this type of blocking, else 0."),
    ("probe_accessible", "gauge", "1 if the last verdict says the target is accessible, else 0."),
    ("probe_verdict_inconclusive", "gauge", "1 if the last verdict was inconclusive (outage, offline probe)."),
    ("probe_throughput_bytes_per_second", "gauge", "Plateau transfer rate of the last throughput test, per flow role."),
    ("probe_last_check_timestamp_seconds", "gauge", "When the target's last run finished (Unix time)."),
    ("probe_measurement_duration_seconds", "gauge", "Wall-clock time of the target's last run."),
    ("probe_tls_cert_expiry_timestamp_seconds", "gauge",
     "Earliest notAfter of verified target certificates (Unix time)."),
    ("probe_circumvention_reachable", "gauge",
     "1 if the circumvention protocol answered, 0 if blocked (absent otherwise)."),
    ("probe_circumvention_status", "gauge", "1 for the last status of the circumvention protocol check."),
)
_EVENT_FAMILIES: Final = (
    ("probe_event_active", "gauge", "1 while a detected blocking/throttling event is ongoing."),
    ("probe_event_start_timestamp_seconds", "gauge", "Start of the ongoing event (Unix time)."),
    ("probe_target_interval_seconds", "gauge",
     "Configured interval between runs of the target (stale when the last check is older than a few)."),
)


_float: Final = cast(Callable[[float], str], _go_float)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(name: str, labels: Sequence[tuple[str, str]], value: float) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}} {_float(value)}\n"


def _target_lines(name: str, s: TargetSnapshot) -> dict[str, str]:
    """One target's samples, rendered once per run (so that a scrape only joins strings)."""
    base = (("target", name), ("service", s.service))
    out: dict[str, list[str]] = {}

    def add(family: str, value: float, *labels: tuple[str, str]) -> None:
        out.setdefault(family, []).append(_line(family, (*base, *labels), value))

    for check, value in sorted(s.reachable.items()):
        add("probe_reachable", value, ("check", check))
    for (check, phase), seconds in sorted(s.durations.items()):
        add("probe_check_duration_seconds", seconds, ("check", check), ("phase", phase))
    for check, count in sorted(s.checks_total.items()):
        add("probe_checks_total", count, ("check", check))
    for (check, failure), count in sorted(s.failures_total.items()):
        add("probe_check_failures_total", count, ("check", check), ("failure", failure))
    if s.has_verdict:
        for kind in sorted(set(BLOCKING_TYPES) | s.seen_types):
            add("probe_blocking", 1.0 if s.blocking == kind else 0.0, ("type", kind))
        add("probe_accessible", 1.0 if s.accessible else 0.0)
        add("probe_verdict_inconclusive", 1.0 if s.inconclusive else 0.0)
    for role, rate in sorted(s.throughput.items()):
        add("probe_throughput_bytes_per_second", rate, ("role", role))
    add("probe_last_check_timestamp_seconds", s.last_check)
    if s.runtime is not None:
        add("probe_measurement_duration_seconds", s.runtime)
    if s.cert_expiry is not None:
        add("probe_tls_cert_expiry_timestamp_seconds", s.cert_expiry)
    for protocol, status in sorted(s.circumvention.items()):
        if status in ("answered", "blocked"):
            add("probe_circumvention_reachable", 1.0 if status == "answered" else 0.0, ("protocol", protocol))
        for known in CIRCUMVENTION_STATUSES:
            add("probe_circumvention_status", 1.0 if status == known else 0.0, ("protocol", protocol),
                ("status", known))
    return {family: "".join(chunk) for family, chunk in out.items()}


def render_targets(state: MetricsState) -> str:
    """The per-target, event and interval families as exposition text (cheap: joins pre-rendered lines)."""
    with state.lock:
        rendered = dict(state.rendered)
        events = dict(state.events)
        intervals = dict(state.intervals)
    names = sorted(rendered)
    parts: list[str] = []
    for family, kind, help_text in FAMILIES:
        chunks = [chunk for n in names if (chunk := rendered[n].get(family))]
        if chunks:
            parts.append(f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n")
            parts.extend(chunks)
    extra: dict[str, list[str]] = {"probe_event_active": [], "probe_event_start_timestamp_seconds": [],
                                   "probe_target_interval_seconds": []}
    for key, start in sorted(events.items(), key=lambda kv: (kv[0].target, kv[0].type)):
        labels = (("target", key.target), ("service", key.service), ("type", key.type))
        extra["probe_event_active"].append(_line("probe_event_active", labels, 1.0))
        extra["probe_event_start_timestamp_seconds"].append(_line("probe_event_start_timestamp_seconds", labels, start))
    for name, (service, seconds) in sorted(intervals.items()):
        extra["probe_target_interval_seconds"].append(
            _line("probe_target_interval_seconds", (("target", name), ("service", service)), seconds))
    for family, kind, help_text in _EVENT_FAMILIES:
        if extra[family]:
            parts.append(f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n")
            parts.extend(extra[family])
    return "".join(parts)


class ProbeCollector(Collector):
    """The build info and the daemon's health, rendered at scrape time."""

    def __init__(self, state: MetricsState, *, daemon: bool = True, info: bool = True) -> None:
        self.state = state
        self.daemon, self.info = daemon, info

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector

    def collect(self) -> Iterator[Metric]:
        with self.state.lock:
            health = _copy_health(self.state.health)
            snaps = list(self.state.targets.values()) if self.daemon else []
        yield from _global_families(health, daemon=self.daemon, info=self.info)
        yield from _service_families(snaps)


def _service_families(snaps: Sequence[TargetSnapshot]) -> Iterator[Metric]:
    """The probe's summary for the fleet: each service's state and the newest result's time.

    Rolled up here, where the verdicts are (probe.analysis.service_state), so that the central
    store needs no recording rule over every probe's per-target series: vmagent sends these and
    drops the per-target families (probe.fleet.vmagent, docs/fleet.md "What is sent"). One series
    per service, its state a label and its value 1: the other states are absent, not 0, because at
    10,000 probes the zeros were four fifths of the fleet's series and every query for the probes
    in a state had to read them all (bench/fleet_metrics.py; docs/metrics.md).
    """
    if not snaps:
        return
    states = service_states((s.service, target_state(s.blocking, s.accessible, s.inconclusive))
                            for s in snaps if s.has_verdict)
    family = GaugeMetricFamily("probe_service_state", "The service's state from its targets' last verdicts, as "
                               "the label (the first of blocked, throttled, origin-withheld, inconclusive, ok that "
                               "any target is in); always 1.", labels=["service", "state"])
    for name, current in sorted(states.items()):
        family.add_metric([name, current], 1.0)
    yield family
    yield GaugeMetricFamily("probe_last_result_timestamp_seconds", "When the newest target run finished "
                            "(Unix time).", value=max(s.last_check for s in snaps))


def _copy_histogram(h: Histogram) -> Histogram:
    copy = Histogram(h.bounds)
    copy.counts, copy.total = list(h.counts), h.total
    return copy


def _copy_health(h: Health) -> Health:
    return Health(
        in_flight=h.in_flight, queue_depth=h.queue_depth, targets=h.targets,
        store_write_errors=dict(h.store_write_errors), records_written=h.records_written, skipped=h.skipped,
        store_dropped_by=dict(h.store_dropped_by), store_buffered=h.store_buffered,
        store_buffered_bytes=h.store_buffered_bytes, store_buffer_limit=h.store_buffer_limit,
        store_writable=h.store_writable,
        measurements=dict(h.measurements), retests=dict(h.retests), lag=_copy_histogram(h.lag),
        loop_lag=_copy_histogram(h.loop_lag),
        store_seconds=_copy_histogram(h.store_seconds), store_pending=h.store_pending, reload_ok=h.reload_ok,
        reload_success_time=h.reload_success_time, start_time=h.start_time,
        upload_enabled=h.upload_enabled, upload_pending=h.upload_pending,
        upload_last_success=h.upload_last_success, upload_errors=dict(h.upload_errors),
        upload_expired=h.upload_expired,
    )


def _global_families(h: Health, *, daemon: bool, info: bool = True) -> Iterator[Metric]:
    if info:
        build = InfoMetricFamily("probe_build", "Build information (always 1).")
        build.add_metric([], {"version": __version__, "schema_version": SCHEMA_VERSION,
                              "python_version": platform.python_version()})
        yield build
    if not daemon:
        return
    yield GaugeMetricFamily("probe_config_last_reload_successful",
                            "1 if the last configuration (re)load succeeded.", value=1.0 if h.reload_ok else 0.0)
    yield GaugeMetricFamily("probe_config_last_reload_success_timestamp_seconds",
                            "When the configuration was last loaded successfully (Unix time).",
                            value=h.reload_success_time)
    yield GaugeMetricFamily("probe_start_time_seconds", "When the daemon started (Unix time).", value=h.start_time)
    yield GaugeMetricFamily("probe_targets", "Configured targets being scheduled.", value=h.targets)
    yield GaugeMetricFamily("probe_measurements_in_flight", "Target runs measuring right now.", value=h.in_flight)
    yield GaugeMetricFamily("probe_scheduler_queue_depth",
                            "Target runs due but waiting for a concurrency slot.", value=h.queue_depth)
    lag = HistogramMetricFamily("probe_scheduler_lag_seconds",
                                "How late target runs started relative to their planned time.")
    lag.add_metric([], h.lag.buckets(), h.lag.total)
    yield lag
    loop_lag = HistogramMetricFamily("probe_event_loop_lag_seconds",
                                     "How late the event loop woke a 0.25 s timer (time it was blocked).")
    loop_lag.add_metric([], h.loop_lag.buckets(), h.loop_lag.total)
    yield loop_lag
    store = HistogramMetricFamily("probe_store_write_seconds",
                                  "Time of each store call (append, flush, events) in the store writer thread.")
    store.add_metric([], h.store_seconds.buckets(), h.store_seconds.total)
    yield store
    yield GaugeMetricFamily("probe_store_pending_writes", "Store calls handed to the writer thread, not done yet.",
                            value=h.store_pending)
    yield CounterMetricFamily("probe_scheduler_skipped", "Planned runs skipped because the previous one was "
                              "still running.", value=h.skipped)
    errors = CounterMetricFamily("probe_store_write_errors", "Store writes that failed, by reason (the records "
                                 "stay in the memory buffer and are retried).", labels=["reason"])
    for reason in sorted(set(REASONS) | set(h.store_write_errors)):
        errors.add_metric([reason], h.store_write_errors.get(reason, 0))
    yield errors
    yield CounterMetricFamily("probe_store_records", "Records committed to the store.", value=h.records_written)
    dropped = CounterMetricFamily("probe_store_records_dropped", "Records lost: refused because the memory "
                                  "buffer was full, or a store call failed without buffering them.", labels=["reason"])
    for why in sorted({"buffer_full", "error"} | set(h.store_dropped_by)):
        dropped.add_metric([why], h.store_dropped_by.get(why, 0))
    yield dropped
    yield GaugeMetricFamily("probe_store_writable", "1 if the last store commit succeeded, 0 while writes fail "
                            "(full or read-only disk).", value=1.0 if h.store_writable else 0.0)
    yield GaugeMetricFamily("probe_store_buffered_records", "Records of finished runs not committed yet (in memory).",
                            value=h.store_buffered)
    yield GaugeMetricFamily("probe_store_buffered_bytes", "Stored text of those records, the size the buffer "
                            "bound counts.", value=h.store_buffered_bytes)
    yield GaugeMetricFamily("probe_store_buffer_limit_bytes", "The bound of that buffer (settings.store_buffer_mb).",
                            value=h.store_buffer_limit)
    runs = CounterMetricFamily("probe_measurements", "Completed target runs by result.", labels=["result"])
    for result, count in sorted(h.measurements.items()):
        runs.add_metric([result], count)
    yield runs
    retests = CounterMetricFamily("probe_retests", "Quick re-tests after a verdict change: run, or dropped "
                                  "because they would not finish before the target's next run.", labels=["result"])
    for result, count in sorted(h.retests.items()):
        retests.add_metric([result], count)
    yield retests
    if h.upload_enabled:
        yield from _upload_families(h)


def _upload_families(h: Health) -> Iterator[Metric]:
    yield GaugeMetricFamily("probe_upload_pending", "Measurements (target runs) in the store not uploaded to the "
                            "collector yet.", value=h.upload_pending)
    yield GaugeMetricFamily("probe_upload_last_success_timestamp_seconds", "When the collector last acknowledged "
                            "a batch (Unix time; 0: never).", value=h.upload_last_success)
    errors = CounterMetricFamily("probe_upload_errors", "Failed upload attempts, by reason.", labels=["reason"])
    for reason in UPLOAD_ERRORS:
        errors.add_metric([reason], h.upload_errors.get(reason, 0))
    yield errors
    yield CounterMetricFamily("probe_upload_expired", "Measurements deleted before they could be uploaded (the "
                              "queue's bound, settings.upload.max_pending_days).", value=h.upload_expired)


def registry_for(state: MetricsState, *, daemon: bool = True, process: bool = True, info: bool = True,
                 ) -> CollectorRegistry:
    """A registry with the probe collector (and process metrics for the daemon's own health).

    ``info=False`` leaves out ``probe_build_info``: a ``/probe`` answer is scraped under the
    target's name as its instance, and dashboards list probes by that series.
    """
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(state, daemon=daemon, info=info))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(state: MetricsState, *, daemon: bool = True, registry: CollectorRegistry | None = None) -> bytes:
    """The text exposition of ``state``: per-target families, then ``registry`` (default: build info
    and, for the daemon, its health)."""
    from prometheus_client import generate_latest

    if registry is None:
        registry = registry_for(state, daemon=daemon, process=False)
    return render_targets(state).encode() + generate_latest(registry)
