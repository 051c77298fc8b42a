"""The OONI measurement: the dataset and wire format, one per target run.

One definition gives the Python type, the JSON encoder/decoder and the JSON Schema
(``probe/data/ooni-measurement.schema.json``, from :func:`json_schema`). It follows
OONI's base data format (ooni/spec ``data-formats/df-000-base.md``, ``data_format_version``
0.2.0) with ``test_keys`` in OONI's templates: ``queries`` (df-002), ``tcp_connect`` (df-005),
``tls_handshakes`` (df-006), ``requests`` (df-001) and ``network_events`` (df-008). The keys
of our own (the verdict, the per-check details, the exact times) are extra keys of
``test_keys``, which OONI's format allows and OONI's reader (``oonidata``) ignores.
docs/records.md documents every field; :mod:`probe.analysis.ooni` builds measurements from
the store's records.

msgspec rather than pydantic v2: on the same measurements it encodes and decodes several
times faster (``bench/record_codec.py`` prints both), and the fleet's collector decodes
every measurement.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

import msgspec

DATA_FORMAT_VERSION: Final = "0.2.0"
#: The version of our test keys (the extra keys and how the templates are filled).
TEST_VERSION: Final = "0.1.0"
#: The test name of a target run: OONI's generic DNS/TCP/TLS/HTTP experiment (docs/records.md says why).
TEST_NAME: Final = "urlgetter"
#: What OONI writes in place of a scrubbed address: the probe's own address is never recorded.
SCRUBBED_IP: Final = "127.0.0.1"
#: The OONI templates a measurement uses, with their versions (df-000 ``extensions``).
EXTENSIONS: Final = {"dnst": 0, "httpt": 0, "netevents": 0, "tcpconnect": 0, "tlshandshake": 0}


#: OONI's time format (UTC, whole seconds): ``2026-04-16 06:10:00``.
OONITime = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")]
UUID7 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]


class _Struct(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Every OONI object: keyword-only; unknown keys are ignored on decode, like OONI's readers."""


class _Event(_Struct, kw_only=True):
    """The fields every template entry shares (ooni/spec data-formats): times since
    ``measurement_start_time`` in seconds (start, and when the outcome was known), tags, and the
    transaction (here: the check, ``test_keys.checks[].transaction_id``)."""

    t0: float
    t: float
    tags: list[str] = []
    transaction_id: int


# -- df-002 DNS ------------------------------------------------------------------------


class DNSAnswer(_Struct, kw_only=True):
    answer_type: str
    ipv4: str | None = None
    ipv6: str | None = None
    hostname: str | None = None
    ttl: int | None = None


class DNSQuery(_Event, kw_only=True):
    answers: list[DNSAnswer] | None
    engine: str
    failure: str | None
    hostname: str
    query_type: str
    rcode: int | None = None
    resolver_address: str
    resolver_hostname: None = None
    resolver_port: None = None


# -- df-005 TCP connect --------------------------------------------------------------


class TCPStatus(_Struct, kw_only=True):
    failure: str | None
    success: bool


class TCPConnect(_Event, kw_only=True):
    ip: str
    port: int
    status: TCPStatus


# -- df-006 TLS handshake ------------------------------------------------------------


class BinaryData(_Struct, kw_only=True):
    format: str = "base64"
    data: str


class TLSHandshake(_Event, kw_only=True):
    network: str = "tcp"
    address: str
    cipher_suite: str | None
    failure: str | None
    negotiated_protocol: str | None
    no_tls_verify: bool = False
    peer_certificates: list[BinaryData] = []
    server_name: str | None
    tls_version: str | None


# -- df-001 HTTP ------------------------------------------------------------------------


class TorInfo(_Struct, kw_only=True):
    exit_ip: str | None = None
    exit_name: str | None = None
    is_tor: bool = False


class HTTPRequest(_Struct, kw_only=True):
    body: str = ""
    body_is_truncated: bool = False
    headers: dict[str, str] = {}
    headers_list: list[list[str]] = []
    method: str
    tor: TorInfo = msgspec.field(default_factory=TorInfo)
    url: str
    x_transport: str = "tcp"


class HTTPResponse(_Struct, kw_only=True):
    #: We keep the body's length and SHA-256 (``test_keys.checks``), not the body itself.
    body: str | None = None
    body_is_truncated: bool = False
    code: int | None
    headers: dict[str, str] = {}
    headers_list: list[list[str]] = []


class HTTPTransaction(_Event, kw_only=True):
    network: str = "tcp"
    address: str | None
    alpn: str | None
    failure: str | None
    request: HTTPRequest
    response: HTTPResponse | None


# -- df-008 network events -----------------------------------------------------------


class NetworkEvent(_Event, kw_only=True):
    address: str | None = None
    failure: str | None = None
    num_bytes: int | None = None
    operation: str
    proto: str = "tcp"


# -- Our keys ----------------------------------------------------------------------------


class Check(_Struct, kw_only=True):
    """One of our checks, as measured: ``transaction_id`` links it to its template entries."""

    transaction_id: int
    id: str
    check: str
    role: str
    input: str
    ok: bool
    failure: str | None
    failed_operation: str | None
    #: RFC 3339 UTC with microseconds (the exact start; ``t0`` is relative to the measurement).
    start_time: str
    t0: float
    runtime: float
    #: Seconds per phase (resolve, connect, tls_handshake, http_round_trip, transfer, ...), µs precision.
    timings: dict[str, float]
    #: The check's own details (DNS answers and outcomes, certificate, HTTP summary, throughput
    #: samples and TCP_INFO figures, circumvention findings, ...): docs/records.md.
    details: dict[str, Any]


class TestKeys(_Struct, kw_only=True):
    # urlgetter (ts-027) keys and the templates.
    agent: str = "redirect"
    socksproxy: None = None
    failure: str | None
    failed_operation: str | None
    queries: list[DNSQuery]
    tcp_connect: list[TCPConnect]
    tls_handshakes: list[TLSHandshake]
    requests: list[HTTPTransaction]
    network_events: list[NetworkEvent]
    # Our verdict (names as in OONI's web_connectivity where they exist).
    accessible: bool | None
    blocking: bool | str | None
    rule: str
    reason: str
    #: Ids of the checks (``checks[].id``) the verdict rests on.
    evidence: list[str]
    target: str
    service: str
    category: str
    #: The exact start of the target run, RFC 3339 UTC with microseconds.
    start_time: str
    #: Our id of the run (one ``probe run --once`` or one daemon round) and of the verdict.
    run_id: str
    verdict_id: str
    throttling: dict[str, Any] | None = None
    diagnostics: list[dict[str, Any]] | None = None
    #: Anything else the verdict carried.
    verdict_details: dict[str, Any] = {}
    retest_of: str | None = None
    retest: int | None = None
    checks: list[Check]


class Measurement(_Struct, kw_only=True):
    """One OONI measurement (df-000), one per target run."""

    annotations: dict[str, str]
    data_format_version: str = DATA_FORMAT_VERSION
    extensions: dict[str, int] = msgspec.field(default_factory=lambda: dict(EXTENSIONS))
    input: str | None
    #: A UUIDv7 (sorts by time): the fleet's idempotency key.
    measurement_uid: UUID7
    measurement_start_time: OONITime
    probe_asn: Annotated[str, msgspec.Meta(pattern=r"^AS\d+$")]
    probe_cc: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
    #: Always OONI's scrubbed value: the probe's own address is never recorded.
    probe_ip: Literal["127.0.0.1"] = SCRUBBED_IP
    probe_network_name: str | None
    report_id: str
    resolver_asn: str | None = None
    resolver_ip: str | None = None
    resolver_network_name: str | None = None
    software_name: str
    software_version: str
    test_helpers: dict[str, Any] = {}
    test_keys: TestKeys
    test_name: str = TEST_NAME
    test_runtime: float
    test_start_time: OONITime
    test_version: str = TEST_VERSION


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Measurement)


def encode(measurement: Measurement) -> bytes:
    """One measurement as compact JSON (one JSONL line without its newline)."""
    return _ENCODER.encode(measurement)


def decode(data: bytes | str) -> Measurement:
    """Parse and validate one measurement; raises ``msgspec.ValidationError`` naming the bad field."""
    return _DECODER.decode(data)


def to_dict(measurement: Measurement) -> dict[str, Any]:
    """The measurement as plain JSON-able Python values."""
    value: dict[str, Any] = msgspec.to_builtins(measurement)
    return value


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a measurement, generated from the classes above."""
    schema: dict[str, Any] = msgspec.json.schema(Measurement)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "probe OONI measurement"
    return schema


def json_schema_text() -> str:
    """The published schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
