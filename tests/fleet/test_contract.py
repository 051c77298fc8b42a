"""The ingest contract: uids, days, and every reason a measurement is refused (no database)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest

from probe.fleet import contract
from probe.fleet.localpg import sample_measurement

TODAY = dt.datetime.now(dt.UTC).date()


def test_new_uid_is_a_uuid7_dated_by_its_timestamp() -> None:
    at = dt.datetime(2026, 4, 16, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    uids = {contract.new_uid(at) for _ in range(1000)}
    assert len(uids) == 1000
    for uid in uids:
        assert uid.version == 7 and uid.variant == uuid.RFC_4122
        assert contract.uid_day(uid) == dt.date(2026, 4, 16)
    assert contract.uid_day(contract.new_uid(at + 1)) == dt.date(2026, 4, 17)


def test_a_sample_measurement_is_valid() -> None:
    m = contract.validate(sample_measurement("p1", time.time(), service="signal"), today=TODAY, max_age_days=30)
    assert (m.probe_id, m.service, m.test_name, m.day) == ("p1", "signal", "urlgetter", TODAY)


def _broken(**changes: Any) -> dict[str, Any]:
    m = sample_measurement("p1", time.time())
    for key, value in changes.items():
        if value is KeyError:
            del m[key]
        else:
            m[key] = value
    return m


@pytest.mark.parametrize(("obj", "reason"), [
    ([1, 2], "not_an_object"),
    (_broken(measurement_uid="nope"), "bad_measurement_uid"),
    (_broken(measurement_uid=KeyError), "bad_measurement_uid"),
    (_broken(measurement_uid=str(uuid.uuid4())), "bad_measurement_uid"),
    (_broken(measurement_uid=str(contract.new_uid(time.time() - 40 * 86400))), "uid_out_of_range"),
    (_broken(measurement_uid=str(contract.new_uid(time.time() + 3 * 86400))), "uid_out_of_range"),
    (_broken(probe_id=KeyError), "bad_probe_id"),
    (_broken(probe_id="a b"), "bad_probe_id"),
    (_broken(measurement_start_time="2026-04-16T06:10:00Z"), "bad_measurement_start_time"),
    (_broken(test_name="Web Connectivity"), "bad_test_name"),
    (_broken(probe_cc="xx"), "bad_probe_cc"),
    (_broken(probe_asn=1234), "bad_probe_asn"),
    (_broken(input=KeyError), "bad_input"),
    (_broken(input=3), "bad_input"),
    (_broken(test_keys=None), "bad_test_keys"),
])
def test_each_invalid_measurement_names_its_reason(obj: Any, reason: str) -> None:
    assert reason in contract.REASONS
    with pytest.raises(contract.Invalid) as caught:
        contract.validate(obj, today=TODAY, max_age_days=30)
    assert caught.value.reason == reason


def test_probe_id_may_sit_in_the_annotations() -> None:
    m = _broken(probe_id=KeyError)
    m["annotations"] = {"probe_id": "p9"}
    assert contract.validate(m, today=TODAY, max_age_days=30).probe_id == "p9"
