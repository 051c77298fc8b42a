"""The OONI measurement: its published schema, ids, times, failures, and the grouping of records into runs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from probe.analysis.ooni import group_runs, measurement, measurements, ooni_time, report_id, uuid7
from probe.core import failures
from probe.core.ooni import decode, json_schema_text, to_dict
from probe.core.records import mark_retest
from probe.storage.export import export
from probe.storage.store import Store
from tests.storage.test_store import T0, make_records

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "probe/data/ooni-measurement.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text(encoding="utf-8")))


def test_published_schema_is_the_generated_one() -> None:
    """Regenerate with: python -c 'from probe.core.ooni import json_schema_text as t; print(t(), end="")'."""
    assert PUBLISHED.read_text(encoding="utf-8") == json_schema_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(json_schema_text()))


def test_exported_jsonl_validates_and_reads_back(tmp_path: Path) -> None:
    records = make_records(3)
    with Store(tmp_path / "s.sqlite") as store:
        store.append(records)
        export(store, "jsonl", tmp_path / "x.jsonl")
    lines = (tmp_path / "x.jsonl").read_bytes().splitlines()
    assert len(lines) == 3
    for line in lines:
        VALIDATOR.validate(json.loads(line))
        assert to_dict(decode(line)) == json.loads(line)


def _one() -> dict[str, Any]:
    return to_dict(measurement(make_records(1)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"probe_ip": "203.0.113.1"}, "probe_ip"),
        ({"measurement_start_time": "2026-04-16T06:10:00.000000Z"}, "measurement_start_time"),
        ({"measurement_uid": str(uuid.uuid4())}, "measurement_uid"),
        ({"probe_asn": "12389"}, "probe_asn"),
        ({"test_runtime": "slow"}, "test_runtime"),
    ],
)
def test_bad_measurements_are_rejected_by_schema_and_decoder(change: dict[str, Any], field: str) -> None:
    bad = {**_one(), **change}
    assert list(VALIDATOR.iter_errors(bad))
    with pytest.raises(msgspec.ValidationError, match=field):
        decode(json.dumps(bad))
    broken = _one()
    broken["test_keys"]["tcp_connect"][0].pop("status")
    assert list(VALIDATOR.iter_errors(broken))


def test_times_ids_and_probe_fields() -> None:
    records = make_records(1)
    m = to_dict(measurement(records))
    verdict = records[-1]
    assert m["measurement_start_time"] == ooni_time(T0 + 1) == "2026-04-16 06:10:01"
    assert m["test_keys"]["start_time"] == verdict["measurement_start_time"]  # the exact µs time
    assert [c["start_time"] for c in m["test_keys"]["checks"]] == [r["measurement_start_time"] for r in records[:2]]
    assert m["test_keys"]["checks"][0]["t0"] == -1.0  # these test records start before their verdict
    uid = uuid.UUID(m["measurement_uid"])
    assert uid.version == 7 and to_dict(measurement(records[::-1])) == m  # deterministic, order-free
    assert (m["probe_cc"], m["probe_asn"], m["probe_ip"]) == ("RU", "AS12389", "127.0.0.1")
    assert m["annotations"]["probe_id"] == "probe-test"
    assert m["report_id"].startswith("2026") and "_urlgetter_RU_12389_n0_" in m["report_id"]
    assert report_id("x", T0, "ZZ", "AS0").endswith("_urlgetter_ZZ_0_n0_" + report_id("x", T0, "ZZ", "AS0")[-16:])


def test_uuid7_sorts_by_time() -> None:
    ids = [uuid7(T0 + k * 0.002, f"seed{k % 3}") for k in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_failures_use_ooni_names_where_ooni_has_one() -> None:
    assert failures.ooni(failures.DNS_FORMAT) == "dns_server_misbehaving"
    assert failures.ooni(failures.CONNECTION_RESET) == "connection_reset"
    assert failures.ooni(None) is None
    for ours in failures.OONI_EXTENSIONS:
        assert failures.ooni(ours) == ours
    records = make_records(1)
    records[0] = {**records[0], "failure": failures.DNS_FORMAT}
    assert to_dict(measurement(records))["test_keys"]["checks"][0]["failure"] == "dns_server_misbehaving"


def test_grouping_by_run_target_and_retest() -> None:
    runs = make_records(4)
    retest = mark_retest(make_records(1, t0=T0 + 2000), runs[-1]["id"], 1)
    stream = sorted([*runs, *retest], key=lambda r: r["measurement_start_time"])
    groups = list(group_runs(stream))
    assert sorted(len(g) for g in groups) == [3] * 5
    assert all(len({r["report_id"] for r in g}) == 1 for g in groups)
    got = [to_dict(m) for m in measurements(stream)]
    assert [m["test_keys"]["retest_of"] for m in got].count(runs[-1]["id"]) == 1
    # A run cut by the time range (its verdict missing) gives no measurement.
    assert list(group_runs(runs[:2])) == []
    with pytest.raises(ValueError, match="one verdict"):
        measurement(runs[:2])


def test_the_documented_example_is_a_valid_measurement() -> None:
    doc = (ROOT / "docs/records.md").read_text(encoding="utf-8")
    start = doc.index("```json\n", doc.index("### Example (`urlgetter`)")) + len("```json\n")
    example = json.loads(doc[start:doc.index("\n```", start)])
    VALIDATOR.validate(example)
    assert to_dict(decode(json.dumps(example))) == example
    for name in example["test_keys"]:  # every key of the example is explained on the page
        assert f"`{name}`" in doc, name


def test_a_daemons_successive_runs_of_one_target_are_separate_measurements() -> None:
    """The daemon keeps one run id; the pipeline stamps a verdict with its run's start (first)."""
    template = make_records(1)  # tcp, tls (control), verdict
    stream: list[dict[str, Any]] = []
    for k in range(4):  # every 5 minutes, well within the grouping horizon
        base = T0 + k * 300
        verdict, *checks = [template[2], template[0], template[1]]
        for offset, record in enumerate([verdict, *checks]):
            stamp = dt.datetime.fromtimestamp(base + offset * 0.1, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            stream.append({**record, "id": f"{k}-{record['id']}", "measurement_start_time": stamp})
    got = [to_dict(m) for m in measurements(stream)]
    assert len(got) == 4
    for k, m in enumerate(got):
        assert m["test_keys"]["verdict_id"].startswith(f"{k}-")
        assert [c["id"][:2] for c in m["test_keys"]["checks"]] == [f"{k}-", f"{k}-"]
        assert [c["t0"] for c in m["test_keys"]["checks"]] == [0.1, 0.2]
