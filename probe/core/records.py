"""Measurement records: what every check returns and what the store keeps.

A check returns a :class:`CheckResult` whose ``details`` is a check-specific
frozen dataclass. A target's run ends in a :class:`Verdict`. Both become plain
JSON records through :func:`check_record` and :func:`verdict_record`, which use
OONI base-format names where one exists (``measurement_start_time``,
``test_runtime``, ``probe_cc``, ``probe_asn``, ``test_keys``, ``input``).

The probe's own public IP is never a field; ``failures.scrub`` removes addresses
from free-text failure messages, and ``probe.core.privacy`` scrubs the probe's own
addresses from every record when ``probe.pipeline.TargetOutcome.records`` makes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from probe import __version__

SCHEMA_VERSION = "1.0.0"
SOFTWARE_NAME = "probe"

Role = Literal["target", "control"]
#: False, or the kind of blocking: "dns", "tcp_ip", "tls", "http-failure", "http-diff",
#: "origin-withheld" (the origin withholds it: a legal restriction), "quic", "throttling"
#: (and the circumvention family's values, see docs/verdicts.md).
Blocking = bool | str

D = TypeVar("D")


def new_id() -> str:
    """A unique, roughly time-ordered id: sortable hex time prefix plus randomness."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


def format_time(epoch: float) -> str:
    """UTC, RFC 3339, microseconds: ``2026-04-16T06:10:00.000000Z``."""
    stamp = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Inverse of :func:`format_time`; also accepts dates and offsets (for ``--since``)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


@dataclass(frozen=True)
class CheckResult(Generic[D]):
    """One step of one target's measurement (a DNS lookup, a TCP connect, ...)."""

    check: str
    target: str
    input: str
    ok: bool
    failure: str | None
    failed_operation: str | None
    start_time: float
    runtime: float
    details: D
    role: Role = "target"
    timings: Mapping[str, float] = field(default_factory=dict)
    id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class Verdict:
    """The explained conclusion for one target in one run.

    ``accessible`` is None and ``blocking`` None when the evidence is inconclusive
    (for example the controls failed too: an outage, not censorship).
    """

    target: str
    service: str
    category: str
    accessible: bool | None
    blocking: Blocking | None
    rule: str
    reason: str
    start_time: float
    evidence: tuple[str, ...] = ()
    failure: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class ProbeMeta:
    """Who measured: never the probe's IP, only what the volunteer chose to declare."""

    probe_id: str
    probe_cc: str = "ZZ"
    probe_asn: str = "AS0"
    probe_network_name: str | None = None
    run_id: str = field(default_factory=new_id)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _base(meta: ProbeMeta, record_type: str, record_id: str, start: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "record_type": record_type,
        "id": record_id,
        "report_id": meta.run_id,
        "probe_id": meta.probe_id,
        "probe_cc": meta.probe_cc,
        "probe_asn": meta.probe_asn,
        "probe_network_name": meta.probe_network_name,
        "software_name": SOFTWARE_NAME,
        "software_version": __version__,
        "measurement_start_time": format_time(start),
    }


def check_record(
    result: CheckResult[Any], meta: ProbeMeta, service: str, category: str
) -> dict[str, Any]:
    """The stored/exported form of a check result."""
    record = _base(meta, "check", result.id, result.start_time)
    record.update(
        {
            "test_name": result.check,
            "test_runtime": round(result.runtime, 6),
            "input": result.input,
            "target": result.target,
            "service": service,
            "category": category,
            "role": result.role,
            "ok": result.ok,
            "failure": result.failure,
            "failed_operation": result.failed_operation,
            "test_keys": {
                "timings": {k: round(v, 6) for k, v in result.timings.items()},
                **_jsonable(result.details),
            },
        }
    )
    return record


def verdict_record(verdict: Verdict, meta: ProbeMeta) -> dict[str, Any]:
    """The stored/exported form of a verdict."""
    record = _base(meta, "verdict", verdict.id, verdict.start_time)
    record.update(
        {
            "test_name": "verdict",
            "test_runtime": 0.0,
            "input": verdict.target,
            "target": verdict.target,
            "service": verdict.service,
            "category": verdict.category,
            "role": "target",
            "ok": verdict.blocking is False and verdict.accessible is True,
            "failure": verdict.failure,
            "failed_operation": None,
            "test_keys": {
                "accessible": verdict.accessible,
                "blocking": verdict.blocking,
                "rule": verdict.rule,
                "reason": verdict.reason,
                "evidence": list(verdict.evidence),
                **_jsonable(dict(verdict.details)),
            },
        }
    )
    return record


#: ``test_keys`` of every record of a re-test (docs/records.md): the id of the verdict whose change
#: triggered it, and which re-test it is (1, 2, ...).
RETEST_OF, RETEST = "retest_of", "retest"


def mark_retest(records: Iterable[Mapping[str, Any]], of: str, k: int) -> list[dict[str, Any]]:
    """The records of re-test ``k`` of verdict ``of``: the same records, marked in their ``test_keys``."""
    return [{**r, "test_keys": {**(r.get("test_keys") or {}), RETEST_OF: of, RETEST: k}} for r in records]


#: ``test_keys`` mark of an early regular run (the daemon's adaptive interval, probe.analysis.retest.Pacer)
EARLY = "early"


def mark_early(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records of a regular run brought forward by the adaptive interval, marked in their ``test_keys``."""
    return [{**r, "test_keys": {**(r.get("test_keys") or {}), EARLY: True}} for r in records]


def on_grid(record: Mapping[str, Any]) -> bool:
    """Whether a record is of a run on the target's regular grid (not a re-test, not an early run)."""
    keys = record.get("test_keys") or {}
    return keys.get(RETEST_OF) is None and keys.get(EARLY) is not True


def retest_of(record: Mapping[str, Any]) -> str | None:
    """The id of the verdict a re-test record re-tests; None for a regular measurement."""
    value = (record.get("test_keys") or {}).get(RETEST_OF)
    return value if isinstance(value, str) else None


def default_probe_id() -> str:
    """A random id for a probe that did not set one (never derived from its address)."""
    return "probe-" + os.urandom(6).hex()


@dataclass(frozen=True)
class Event:
    """A blocking or throttling episode on one series, with bounded timestamps.

    A series is one per (probe, target, check kind, blocking type). ``start_low``
    is the last good measurement before the episode and ``start_high`` the first
    bad one; the true onset lies between them. ``end_*`` are None while ongoing.
    """

    id: str
    probe_id: str
    target: str
    service: str
    check: str
    type: str  # "dns", "tcp_ip", "tls", "http", "throttling", ...
    start_time: float
    start_low: float
    start_high: float
    end_time: float | None
    end_low: float | None
    end_high: float | None
    confidence: float
    evidence: tuple[str, ...] = ()

    @property
    def ongoing(self) -> bool:
        return self.end_time is None
