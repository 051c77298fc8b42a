"""The published record format: docs/schema/record.schema.json and docs/records.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.core.records import SCHEMA_VERSION
from probe.storage.store import FIELD_ORDER, Store
from tests.storage.test_store import make_records

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs/schema/record.schema.json").read_text(encoding="utf-8"))
DOC = (ROOT / "docs/records.md").read_text(encoding="utf-8")
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_schema_is_valid_and_versioned() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["x-schema-version"] == SCHEMA_VERSION
    assert SCHEMA["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert SCHEMA["$id"].endswith(f"record-{SCHEMA_VERSION}.schema.json")
    assert f"schema version {SCHEMA_VERSION}" in DOC


def test_schema_lists_exactly_the_record_fields() -> None:
    assert list(SCHEMA["properties"]) == list(FIELD_ORDER)


def test_real_records_validate() -> None:
    for record in make_records(6):
        VALIDATOR.validate(record)


def test_stored_records_validate(tmp_path: Path) -> None:
    """The store's normalised form (the JSONL export is OONI measurements: tests/core/test_ooni_schema.py)."""
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.append(make_records(3))
        for text in store.query_json():
            VALIDATOR.validate(json.loads(text))


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"probe_ip": "203.0.113.1"}, "probe_ip"),
        ({"schema_version": "0.9.0"}, "schema_version"),
        ({"measurement_start_time": "2026-04-16 06:10:00"}, "measurement_start_time"),
        ({"ok": "yes"}, "ok"),
        ({"record_type": "other"}, "record_type"),
    ],
)
def test_bad_records_are_rejected(change: dict[str, Any], path: str) -> None:
    record = {**make_records(1)[0], **change}
    errors = list(VALIDATOR.iter_errors(record))
    assert errors and any(path in (e.message + " ".join(map(str, e.path))) for e in errors)


def test_verdict_keys_are_required_and_typed() -> None:
    verdict = make_records(1)[-1]
    assert verdict["record_type"] == "verdict"
    VALIDATOR.validate(verdict)
    for bad in ({"blocking": True}, {"accessible": "no"}, {"evidence": "m1"}):
        broken = {**verdict, "test_keys": {**verdict["test_keys"], **bad}}
        assert list(VALIDATOR.iter_errors(broken)), bad
    missing = {**verdict, "test_keys": {k: v for k, v in verdict["test_keys"].items()
                                        if k != "rule"}}
    assert list(VALIDATOR.iter_errors(missing))
    client = {**verdict, "test_keys": {**verdict["test_keys"], "client_ip": "203.0.113.1"}}
    assert list(VALIDATOR.iter_errors(client))


def _documented(name: str) -> bool:
    return re.search(rf"`{re.escape(name)}`", DOC) is not None


def test_every_field_is_documented() -> None:
    names = set(SCHEMA["properties"])
    for definition in SCHEMA["$defs"].values():
        names |= set(definition.get("properties", {}))
    from probe.storage.export import EVENT_SCHEMA, RECORD_SCHEMA

    names |= set(RECORD_SCHEMA.names) | set(EVENT_SCHEMA.names) | {"date"}
    missing = sorted(n for n in names if not _documented(n))
    assert missing == []


def test_retest_records_validate_and_their_marks_are_typed(tmp_path: Path) -> None:
    from probe.core.records import mark_retest

    records = make_records(1)
    verdict = records[-1]
    with Store(tmp_path / "s.sqlite") as store:  # stored as they are
        store.append(mark_retest(records, verdict["id"], 2))
        lines = [json.loads(text) for text in store.query_json()]
    assert len(lines) == len(records) and all(r["test_keys"]["retest_of"] == verdict["id"] for r in lines)
    for record in lines:
        VALIDATOR.validate(record)
    marked = mark_retest([verdict], verdict["id"], 1)[0]
    for bad in ({"retest": 0}, {"retest_of": "nope"}, {"retest": "1"}):
        assert list(VALIDATOR.iter_errors({**marked, "test_keys": {**marked["test_keys"], **bad}})), bad
    lone = {k: v for k, v in marked["test_keys"].items() if k != "retest"}
    assert list(VALIDATOR.iter_errors({**marked, "test_keys": lone}))
