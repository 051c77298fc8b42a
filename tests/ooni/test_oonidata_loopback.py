"""Real target runs against loopback servers, as OONI measurements, read by OONI's own reader.

The runs (tests/ooni/scenarios.py: ok, DNS blocked, TCP blocked, TLS reset, block page,
throttled, circumvention target) go through the real checks and verdict table. Their
measurements are written as ``probe run --out`` writes them and loaded with
``oonidata.dataclient.load_measurement`` in oonidata's own venv (tests/ooni/venv.py): every one
must load into the model of its ``test_name``, with the templates filled where a check ran and
the values our verdict used (DNS answers, TCP results, TLS failures, HTTP statuses), as
oonidata parsed them. Each also validates against the published JSON Schema.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme

from probe.analysis.ooni import measurement
from probe.core import failures
from probe.core.ooni import decode, encode, to_dict
from probe.core.records import CheckResult
from tests.ooni import venv
from tests.ooni.scenarios import META, Scenario, run_all

HERE = Path(__file__).resolve().parent
SCHEMA = json.loads((HERE.parents[1] / "probe/data/ooni-measurement.schema.json").read_text(encoding="utf-8"))
EXPECTED = {  # scenario: (rule, blocking)
    "ok": ("accessible", False),
    "dns_blocked": ("dns_bogon", "dns"),
    "tcp_blocked": ("tcp_blocked", "tcp_ip"),
    "tls_reset": ("tls_outage", None),
    "block_page": ("http_blockpage", "http-diff"),
    "throttled": ("throttling", "throttling"),
    "circumvention": ("circumvention_answered", False),
}


@pytest.fixture(scope="session")
def oonidata_python() -> Path:
    return venv.ensure()


@pytest.fixture(scope="module")
def scenarios(ca: trustme.CA, ca_file: Path) -> list[Scenario]:
    return run_all(ca, ca_file)


@pytest.fixture(scope="module")
def loaded(scenarios: list[Scenario], oonidata_python: Path,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = tmp_path_factory.mktemp("ooni") / "measurements.jsonl"
    lines = [encode(measurement(s.outcome.records(META))) for s in scenarios]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    done = subprocess.run([str(oonidata_python), str(HERE / "oonidata_load.py"), str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in lines], json.loads(done.stdout)


def test_the_scenarios_are_what_they_claim(scenarios: list[Scenario]) -> None:
    if len(scenarios) < len(EXPECTED):  # the circumvention target needs microsocks (scripts/test installs it)
        assert {s.name for s in scenarios} == set(EXPECTED) - {"circumvention"}
    for s in scenarios:
        assert (s.outcome.verdict.rule, s.outcome.verdict.blocking) == EXPECTED[s.name], s.name
    tls = next(s for s in scenarios if s.name == "tls_reset").outcome.verdict
    assert tls.failure == failures.CONNECTION_RESET


def test_every_measurement_loads_into_its_oonidata_model(
    loaded: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    ours, summary = loaded
    assert summary["failed"] == []
    assert summary["loaded"] == len(ours) >= 6
    for mine, theirs in zip(ours, summary["measurements"], strict=True):
        assert theirs["class"] == theirs["expected_class"] == "UrlGetter"
        assert theirs["test_keys_class"] == "UrlGetterTestKeys"
        assert theirs["measurement_uid"] == mine["measurement_uid"]
        assert theirs["probe_ip"] == "127.0.0.1"
        assert theirs["failure"] == mine["test_keys"]["failure"]
        assert "://" in theirs["input"] and " " not in theirs["input"]


def _entries(summary: dict[str, Any], template: str, tid: int) -> list[dict[str, Any]]:
    return [e for e in summary[template] if e["transaction_id"] == tid]


def _check_matches(result: CheckResult[Any], tid: int, theirs: dict[str, Any]) -> None:
    """What oonidata parsed for one check equals what the check measured (and the verdict used)."""
    failure = failures.ooni(result.failure)
    d = result.details
    if result.check == "dns":
        queries = _entries(theirs, "queries", tid)
        assert queries and {q["hostname"] for q in queries} == {d.query}
        assert sorted(a for q in queries for a in q["answers"]) == sorted(d.addresses)
        assert failure is None or failure in {q["failure"] for q in queries}
    elif result.check in ("tcp", "tls", "throughput", "circumvention"):
        connects = _entries(theirs, "tcp_connect", tid)
        assert [(c["ip"], c["port"]) for c in connects] == [(d.address, d.port)]
        connected = result.failed_operation != "connect"
        assert connects[0]["success"] is connected
        assert connects[0]["failure"] == (None if connected else failure)
        if result.check in ("tls", "throughput") and connected:
            handshakes = _entries(theirs, "tls_handshakes", tid)
            assert len(handshakes) == 1 and handshakes[0]["server_name"] == d.sni
            shook = result.failed_operation != "tls_handshake"
            assert handshakes[0]["failure"] == (None if shook else failure)
    if result.check in ("http", "throughput"):
        requests = _entries(theirs, "requests", tid)
        assert len(requests) == 1 and requests[0]["code"] == d.status and requests[0]["failure"] == failure


def test_templates_hold_what_the_verdict_used(
    scenarios: list[Scenario], loaded: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    ours, summary = loaded
    for s, mine, theirs in zip(scenarios, ours, summary["measurements"], strict=True):
        tids = {c["id"]: c["transaction_id"] for c in mine["test_keys"]["checks"]}
        assert set(tids) == {r.id for r in s.outcome.results}
        assert mine["test_keys"]["evidence"] == list(s.outcome.verdict.evidence)
        kinds = {r.check for r in s.outcome.results}
        for kind, template in (("dns", "queries"), ("tcp", "tcp_connect"), ("http", "requests"),
                               ("throughput", "requests"), ("circumvention", "tcp_connect")):
            if kind in kinds:
                assert theirs[template], (s.name, template)
        if any(r.check == "tls" and r.failed_operation != "connect" for r in s.outcome.results):
            assert theirs["tls_handshakes"], s.name
        by_id = {r.id: r for r in s.outcome.results}
        for evidence in s.outcome.verdict.evidence:
            if evidence in by_id:
                _check_matches(by_id[evidence], tids[evidence], theirs)
        if s.name == "throttled":
            assert theirs["network_events"] > 3  # connects and bytes_received_cumulative samples
            assert mine["test_keys"]["throttling"]["blocking"] == "throttling"


def test_every_measurement_validates_against_the_published_schema(
    loaded: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    ours, _ = loaded
    for mine in ours:
        validator.validate(mine)
        assert to_dict(decode(json.dumps(mine))) == mine  # the model reads back what it wrote
