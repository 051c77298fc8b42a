"""The collector's ingest contract: which JSON objects a batch may carry, in one place.

A measurement is an OONI base-format object (df-000) plus a ``measurement_uid``, a UUIDv7 the
probe chose when it measured: the idempotency key. A retried batch carries the same uids, so the
central store keeps each measurement once. Until the shared OONI model (issue 15) lands, the
fields the collector needs are checked here, and only here; :func:`validate` is the one function to
point at that model later, :func:`probe_id_of` the one that says where our probe id lives.

The day a measurement is filed under is the day of its uid's timestamp (UUIDv7 carries the
milliseconds since the epoch in its first 48 bits). Because the day is a function of the uid, the
store's primary key ``(day, measurement_uid)`` is unique on the uid alone, across partitions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The reasons a measurement is refused; also the ``reason`` label of the reject metric.
REASONS = (
    "not_an_object",
    "bad_measurement_uid",
    "uid_out_of_range",
    "bad_probe_id",
    "bad_measurement_start_time",
    "bad_test_name",
    "bad_probe_cc",
    "bad_probe_asn",
    "bad_input",
    "bad_test_keys",
    "duplicate_in_batch",
)

_TEST_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CC = re.compile(r"^[A-Z]{2}$")
_ASN = re.compile(r"^AS[0-9]{1,10}$")
_PROBE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_START_FORMAT = "%Y-%m-%d %H:%M:%S"
_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")


class Invalid(Exception):
    """A measurement the collector refuses: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Measurement:
    """The columns the central store indexes; ``body`` is the measurement itself."""

    uid: uuid.UUID
    day: dt.date
    probe_id: str
    probe_cc: str
    probe_asn: str
    test_name: str
    input: str | None
    service: str | None
    start_time: dt.datetime
    body: str   # the measurement as JSON text


def probe_id_of(obj: Mapping[str, Any]) -> Any:
    """Where a measurement names the probe that made it: the top-level ``probe_id`` key.

    oonidata's model (ooni/data HEAD) has an optional top-level ``probe_id``; our records carry
    it there too. ``annotations.probe_id`` is accepted when the top level has none.
    """
    value = obj.get("probe_id")
    if value is None and isinstance(obj.get("annotations"), Mapping):
        value = obj["annotations"].get("probe_id")
    return value


def service_of(obj: Mapping[str, Any]) -> str | None:
    """The messaging/cloud service measured (our key), top level or in the annotations."""
    value = obj.get("service")
    if value is None and isinstance(obj.get("annotations"), Mapping):
        value = obj["annotations"].get("service")
    return value if isinstance(value, str) else None


def valid_probe_id(value: Any) -> bool:
    return isinstance(value, str) and _PROBE_ID.match(value) is not None


def uid_day(uid: uuid.UUID) -> dt.date:
    """The UTC day of a UUIDv7's timestamp."""
    millis = uid.int >> 80
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).date()


def new_uid(at: float) -> uuid.UUID:
    """A UUIDv7 for the epoch time ``at`` (RFC 9562): for tests, benchmarks and the simulator."""
    millis = int(at * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(uuid.uuid4().bytes, "big") & ((1 << 74) - 1)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def validate(obj: Any, *, today: dt.date, max_age_days: int, raw: str | None = None) -> Measurement:
    """The measurement ``obj`` as the store will keep it, or :class:`Invalid` saying why not.

    ``raw`` is the JSON text ``obj`` was parsed from, when there is one: kept as the body as is.

    The uid's day must lie within ``max_age_days`` before ``today`` and at most one day after it
    (a probe whose clock is far off cannot make the store create partitions for any year).
    """
    if not isinstance(obj, Mapping):
        raise Invalid("not_an_object", "a measurement is a JSON object")
    try:
        uid = uuid.UUID(str(obj["measurement_uid"]))
    except (KeyError, ValueError) as exc:
        raise Invalid("bad_measurement_uid", "measurement_uid must be a UUID") from exc
    if uid.version != 7:
        raise Invalid("bad_measurement_uid", "measurement_uid must be a UUIDv7")
    day = uid_day(uid)
    if not today - dt.timedelta(days=max_age_days) <= day <= today + dt.timedelta(days=1):
        raise Invalid("uid_out_of_range", f"measurement_uid is dated {day}, outside the retention window")
    probe_id = probe_id_of(obj)
    if not valid_probe_id(probe_id):
        raise Invalid("bad_probe_id", "probe_id must be a short string of letters, digits and ._:-")
    start = obj.get("measurement_start_time")
    try:
        if not isinstance(start, str) or not _START.match(start):
            raise ValueError(start)
        start_time = dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise Invalid("bad_measurement_start_time", f"measurement_start_time must be {_START_FORMAT!r}") from exc
    test_name = obj.get("test_name")
    if not isinstance(test_name, str) or not _TEST_NAME.match(test_name):
        raise Invalid("bad_test_name", "test_name must be snake_case")
    cc = obj.get("probe_cc")
    if not isinstance(cc, str) or not _CC.match(cc):
        raise Invalid("bad_probe_cc", "probe_cc must be two capital letters (ZZ if not shared)")
    asn = obj.get("probe_asn")
    if not isinstance(asn, str) or not _ASN.match(asn):
        raise Invalid("bad_probe_asn", "probe_asn must look like AS1234 (AS0 if not shared)")
    if "input" not in obj or not (obj["input"] is None or isinstance(obj["input"], str)):
        raise Invalid("bad_input", "input must be present, a string or null")
    if not isinstance(obj.get("test_keys"), Mapping):
        raise Invalid("bad_test_keys", "test_keys must be an object")
    body = raw if raw is not None else json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return Measurement(uid, day, probe_id, cc, asn, test_name, obj["input"], service_of(obj), start_time, body)
