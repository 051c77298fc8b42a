"""Records to OONI measurements: one measurement per target run, a pure conversion.

The store keeps its own normalised form (one record per check, one per verdict:
:mod:`probe.core.records`); exports and ``probe run --out`` write OONI measurements
(:mod:`probe.core.ooni`) built here from a target run's records, the check records and
the verdict record that share the run. Nothing here reads a clock or the network: the
same records always give the same measurement, ids included, so that the fleet can use
``measurement_uid`` as an idempotency key.

How our checks fill OONI's templates (``transaction_id`` is the check's position in
``test_keys.checks``, plus one, so a template entry leads to the full check):

* ``dns``: one ``queries`` entry per query type (A, AAAA), with its answers, rcode and failure;
* ``tcp``: a ``tcp_connect`` entry and a ``connect`` network event;
* ``tls``: the connect it made (``tcp_connect``) and, once connected, a ``tls_handshakes`` entry;
* ``http``: a ``requests`` entry (status and headers; we keep the body's hash, not the body);
* ``throughput``: connect, handshake and request, plus ``bytes_received_cumulative``
  network events from the download samples;
* ``circumvention``: the TCP connect of a TCP-based handshake.

Everything else (QUIC, test-helper controls, diagnostics, and every check's full details)
is in ``test_keys.checks``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from probe.core import failures
from probe.core.ooni import (
    TEST_NAME,
    Check,
    DNSAnswer,
    DNSQuery,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    Measurement,
    NetworkEvent,
    TCPConnect,
    TCPStatus,
    TestKeys,
    TLSHandshake,
)
from probe.core.records import RETEST, RETEST_OF, parse_time

OONI_TIME = "%Y-%m-%d %H:%M:%S"
#: A target run's checks start within this many seconds of its verdict's start (its own
#: start): far more than any run's time budget. Exports group records within this horizon.
RUN_HORIZON = 1800.0

_ENGINES = {"system": "getaddrinfo", "udp": "udp", "tcp": "tcp", "tls": "dot", "https": "doh"}
_RCODES = {"dns_nxdomain_error": 3, "dns_servfail_error": 2, "dns_refused_error": 5, "dns_format_error": 1,
           "dns_no_answer": 0, "dns_bogon_error": 0}
_VERDICT_KEYS = ("accessible", "blocking", "rule", "reason", "evidence", "throttling", "diagnostics",
                 RETEST_OF, RETEST)


#: ``parse_time`` remembered: every record's time is read by group_runs and again by measurement
#: (a run's records are grouped a few hundred records before they are converted).
_time = functools.lru_cache(maxsize=1 << 14)(parse_time)


@functools.lru_cache(maxsize=1 << 10)  # a run's start is shared by all its targets' measurements
def ooni_time(epoch: float) -> str:
    """OONI's time format, UTC, whole seconds: ``2026-04-16 06:10:00``."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime(OONI_TIME)


def _rfc3339(text: str, epoch: float) -> str:
    """``text`` if it is already RFC 3339 UTC with µs (as records store it), else ``epoch`` so written."""
    if len(text) == 27 and text[-1] == "Z" and text[10] == "T":
        return text
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuid7(epoch: float, seed: str) -> str:
    """A UUIDv7 (RFC 9562) for time ``epoch``, its 74 random bits taken from SHA-256 of ``seed``.

    Deterministic: the same record gives the same id, on every export.
    """
    ms = int(epoch * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    rand_a, rand_b = (rand >> 62) & 0xFFF, rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def run_start(run_id: str, fallback: float) -> float:
    """When a run began: our ids start with 16 hex digits of the nanosecond clock."""
    try:
        started = int(run_id[:16], 16) / 1e9 if len(run_id) == 32 else fallback
    except ValueError:
        started = fallback
    return min(started, fallback)


@functools.lru_cache(maxsize=1 << 10)  # the same for every target of a run
def report_id(run_id: str, started: float, probe_cc: str, probe_asn: str) -> str:
    """OONI's report id shape: ``20260416T061000Z_urlgetter_IT_30722_n0_<16 chars>`` (``n0``: no collector)."""
    stamp = dt.datetime.fromtimestamp(started, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    asn = probe_asn[2:] if probe_asn.startswith("AS") and probe_asn[2:].isdigit() else "0"
    rand = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f"{stamp}_{TEST_NAME.replace('_', '')}_{probe_cc}_{asn}_n0_{rand}"


def _endpoint(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return host if port is None else f"{host}:{port}"


def _url_port(url: str) -> int | None:
    try:
        parts = urlsplit(url)
        return parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None


class _Builder:
    """Template entries of one measurement, in the order the checks ran."""

    def __init__(self) -> None:
        self.queries: list[DNSQuery] = []
        self.tcp_connect: list[TCPConnect] = []
        self.tls_handshakes: list[TLSHandshake] = []
        self.requests: list[HTTPTransaction] = []
        self.network_events: list[NetworkEvent] = []

    def add(self, check: Check) -> None:
        adder = getattr(self, f"_{check.check}", None)
        if adder is not None:
            adder(check, [check.role])

    # -- One method per check kind ------------------------------------------------------

    def _dns(self, c: Check, tags: list[str]) -> None:
        d = c.details
        scheme = str(d.get("resolver_scheme") or "system")
        resolver = str(d.get("resolver") or "")
        address = resolver.split("://", 1)[1] if scheme in ("udp", "tcp", "tls") and "://" in resolver else (
            resolver if scheme == "https" else "")
        answers = [a for a in d.get("answers") or [] if isinstance(a, Mapping)]
        bogons = set(d.get("bogons") or ())
        outcomes: Mapping[str, Any] = d.get("outcomes") or {}
        qtypes = list(outcomes) or ["A"]
        for n, qtype in enumerate(qtypes):
            mine = [a for a in answers if a.get("qtype") == qtype or (n == 0 and a.get("qtype") not in qtypes)]
            outcome = outcomes.get(qtype)
            failure = c.failure if outcome is None else (None if outcome == "ok" else str(outcome))
            if failure is None and any(a.get("value") in bogons for a in mine):
                failure = failures.DNS_BOGON
            rcode = _RCODES.get(failure or "dns_no_answer") if d.get("rcode") is not None else None
            spent = c.timings.get(f"resolve_{qtype.lower()}", c.runtime)
            self.queries.append(DNSQuery(
                answers=[_answer(a) for a in mine] or None, engine=_ENGINES.get(scheme, scheme),
                failure=failures.ooni(failure), hostname=str(d.get("query") or ""), query_type=qtype,
                rcode=rcode, resolver_address=address, t0=c.t0, t=round(c.t0 + spent, 6), tags=tags,
                transaction_id=c.transaction_id,
            ))

    def _tcp(self, c: Check, tags: list[str]) -> None:
        self._connect(c, tags, c.failure if c.failed_operation in (None, "connect") else None)

    def _tls(self, c: Check, tags: list[str]) -> None:
        if self._connect(c, tags, c.failure if c.failed_operation == "connect" else None):
            self._handshake(c, tags)

    def _http(self, c: Check, tags: list[str]) -> None:
        d = c.details
        url = str(d.get("url") or c.input)
        address = d.get("address")
        version = d.get("http_version")
        self._request(c, tags, url, "GET", _endpoint(str(address), _url_port(url)) if address else None,
                      "h2" if version == "HTTP/2" else ("http/1.1" if version else None),
                      d.get("status"), d.get("headers") or {}, bool(d.get("body_truncated")))

    def _throughput(self, c: Check, tags: list[str]) -> None:
        d = c.details
        if not self._connect(c, tags, c.failure if c.failed_operation == "connect" else None):
            return
        if not self._handshake(c, tags):
            return
        url = str(d.get("url") or "")
        method = "POST" if d.get("direction") == "up" else "GET"
        self._request(c, tags, url, method, _endpoint(str(d.get("address")), d.get("port")), None,
                      d.get("status"), {}, bool(d.get("stopped_early") or d.get("timed_out")))
        if d.get("direction") != "up":
            start = c.t0 + c.timings.get("connect", 0.0) + c.timings.get("tls_handshake", 0.0)
            for at, total in d.get("samples") or []:
                self.network_events.append(NetworkEvent(
                    operation="bytes_received_cumulative", num_bytes=int(total), t0=round(start + at, 6),
                    t=round(start + at, 6), tags=tags, transaction_id=c.transaction_id,
                ))

    def _circumvention(self, c: Check, tags: list[str]) -> None:
        if c.details.get("transport") == "tcp" and ("connect" in c.timings or c.failed_operation == "connect"):
            self._connect(c, tags, c.failure if c.failed_operation == "connect" else None)

    # -- Shared steps ---------------------------------------------------------------------

    def _connect(self, c: Check, tags: list[str], failure: str | None) -> bool:
        """The check's TCP connect (tcp_connect and a network event); whether it succeeded."""
        d = c.details
        address, port = d.get("address"), d.get("port")
        if not isinstance(address, str) or not isinstance(port, int):
            return False
        failure = failures.ooni(failure)
        t = round(c.t0 + c.timings.get("connect", c.runtime), 6)
        self.tcp_connect.append(TCPConnect(
            ip=address, port=port, status=TCPStatus(failure=failure, success=failure is None), t0=c.t0, t=t,
            tags=tags, transaction_id=c.transaction_id,
        ))
        self.network_events.append(NetworkEvent(
            address=_endpoint(address, port), failure=failure, operation="connect", t0=c.t0, t=t, tags=tags,
            transaction_id=c.transaction_id,
        ))
        return failure is None

    def _handshake(self, c: Check, tags: list[str]) -> bool:
        d = c.details
        failure = failures.ooni(c.failure if c.failed_operation == "tls_handshake" else None)
        start = round(c.t0 + c.timings.get("connect", 0.0), 6)
        done = c.timings.get("tls_handshake", d.get("tls_handshake_time"))
        self.tls_handshakes.append(TLSHandshake(
            address=_endpoint(str(d.get("address")), d.get("port")), cipher_suite=d.get("cipher"),
            failure=failure, negotiated_protocol=d.get("alpn"), server_name=d.get("sni"),
            tls_version=d.get("version"), t0=start,
            t=round(start + done, 6) if isinstance(done, float) else round(c.t0 + c.runtime, 6),
            tags=tags, transaction_id=c.transaction_id,
        ))
        return failure is None

    def _request(self, c: Check, tags: list[str], url: str, method: str, address: str | None, alpn: str | None,
                 status: Any, headers: Mapping[str, Any], truncated: bool) -> None:
        failure = failures.ooni(c.failure)
        response = None
        if isinstance(status, int):
            pairs = {str(k): str(v) for k, v in headers.items()}
            response = HTTPResponse(code=status, headers=pairs, headers_list=[[k, v] for k, v in pairs.items()],
                                    body_is_truncated=truncated)
        self.requests.append(HTTPTransaction(
            address=address, alpn=alpn, failure=failure, request=HTTPRequest(method=method, url=url),
            response=response, t0=c.t0, t=round(c.t0 + c.runtime, 6), tags=tags, transaction_id=c.transaction_id,
        ))


def _answer(a: Mapping[str, Any]) -> DNSAnswer:
    qtype, value = str(a.get("qtype")), str(a.get("value"))
    ttl = a.get("ttl") if isinstance(a.get("ttl"), int) else None
    if qtype == "A":
        return DNSAnswer(answer_type="A", ipv4=value, ttl=ttl)
    if qtype == "AAAA":
        return DNSAnswer(answer_type="AAAA", ipv6=value, ttl=ttl)
    return DNSAnswer(answer_type=qtype, hostname=value, ttl=ttl)


def _check(record: Mapping[str, Any], begun: float, n: int, start: float) -> Check:
    keys = dict(record.get("test_keys") or {})
    timings = keys.pop("timings", None) or {}
    return Check(
        transaction_id=n, id=str(record["id"]), check=str(record["test_name"]),
        role=str(record.get("role") or "target"), input=str(record.get("input") or ""), ok=bool(record.get("ok")),
        failure=failures.ooni(record.get("failure")), failed_operation=record.get("failed_operation"),
        start_time=_rfc3339(str(record["measurement_start_time"]), begun), t0=round(begun - start, 6),
        runtime=float(record.get("test_runtime") or 0.0),
        timings={str(k): float(v) for k, v in timings.items()}, details=keys,
    )


def _input(checks: Sequence[Check]) -> str | None:
    """A URL-like input, as OONI's urlgetter takes: the target's URL, else its endpoint."""
    mine = [c for c in checks if c.role == "target"] or list(checks)
    for kind in ("http", "throughput"):
        for c in mine:
            if c.check == kind and c.details.get("url"):
                return str(c.details["url"])
    for kind, scheme in (("tls", "tlshandshake"), ("tcp", "tcpconnect")):
        for c in mine:
            d = c.details
            if c.check == kind and isinstance(d.get("address"), str) and isinstance(d.get("port"), int):
                return f"{scheme}://{_endpoint(d['address'], d['port'])}"
    for c in mine:
        if c.check == "dns" and c.details.get("query"):
            return f"dnslookup://{c.details['query']}"
    return next((c.input for c in mine if "://" in c.input), None)


def measurement(records: Sequence[Mapping[str, Any]]) -> Measurement:
    """The OONI measurement of one target run: its check records and its verdict record.

    Raises ValueError without exactly one verdict record.
    """
    verdicts = [r for r in records if r.get("record_type") == "verdict"]
    if len(verdicts) != 1:
        raise ValueError(f"a target run has one verdict record, not {len(verdicts)}")
    v = verdicts[0]
    vk: Mapping[str, Any] = v.get("test_keys") or {}
    start = _time(str(v["measurement_start_time"]))
    timed = sorted(((_time(str(r["measurement_start_time"])), k, r) for k, r in enumerate(records)
                    if r.get("record_type") == "check"))  # by time, then position (k is unique)
    checks = [_check(r, begun, n, start) for n, (begun, _, r) in enumerate(timed, 1)]
    built = _Builder()
    for c in checks:
        built.add(c)
    run_id, cc, asn = str(v.get("report_id") or ""), str(v.get("probe_cc") or "ZZ"), str(v.get("probe_asn") or "AS0")
    began = run_start(run_id, start)
    evidence = [str(e) for e in vk.get("evidence") or ()]
    decisive = next((c for c in checks if c.failure is not None and c.id in evidence), None)
    resolvers = [c.details.get("resolver_address") for c in checks if c.check == "dns" and c.role == "target"]
    extra = {k: val for k, val in vk.items() if k not in _VERDICT_KEYS}
    keys = TestKeys(
        failure=failures.ooni(v.get("failure")), failed_operation=decisive.failed_operation if decisive else None,
        queries=built.queries, tcp_connect=built.tcp_connect, tls_handshakes=built.tls_handshakes,
        requests=built.requests, network_events=built.network_events,
        accessible=vk.get("accessible"), blocking=vk.get("blocking"), rule=str(vk.get("rule") or ""),
        reason=str(vk.get("reason") or ""), evidence=evidence,
        target=str(v.get("target")), service=str(v.get("service")), category=str(v.get("category")),
        start_time=_rfc3339(str(v["measurement_start_time"]), start), run_id=run_id, verdict_id=str(v["id"]),
        throttling=vk.get("throttling"), diagnostics=vk.get("diagnostics"), verdict_details=extra,
        retest_of=vk.get(RETEST_OF), retest=vk.get(RETEST), checks=checks,
    )
    annotations = {"engine_name": str(v.get("software_name") or "probe"),
                   "engine_version": str(v.get("software_version") or ""), "probe_id": str(v.get("probe_id") or "")}
    return Measurement(
        annotations=annotations,
        input=_input(checks),
        measurement_uid=uuid7(start, str(v["id"])),
        measurement_start_time=ooni_time(start),
        probe_asn=asn, probe_cc=cc, probe_network_name=v.get("probe_network_name"),
        report_id=report_id(run_id, began, cc, asn),
        resolver_ip=next((str(r) for r in resolvers if isinstance(r, str) and r), None),
        software_name=str(v.get("software_name") or "probe"), software_version=str(v.get("software_version") or ""),
        test_keys=keys,
        test_runtime=round(max([c.t0 + c.runtime for c in checks] or [0.0]), 6) if checks else 0.0,
        test_start_time=ooni_time(began),
    )


def _run_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    keys = record.get("test_keys") or {}
    return (record.get("report_id"), record.get("target"), keys.get(RETEST_OF), keys.get(RETEST))


def group_runs(records: Iterable[Mapping[str, Any]], horizon: float = RUN_HORIZON) -> Iterator[list[Mapping[str, Any]]]:
    """Target runs, from records in time order.

    The records of one run share its run id (``report_id``), target and re-test marks, and hold
    one verdict. A daemon keeps one run id for its lifetime, so a target's successive runs share
    all three: a second verdict under the same key starts the next run. (The pipeline stamps a
    verdict with its run's start, so it comes before the run's checks; records built otherwise,
    checks first, need a run id of their own, as every ``probe run --once`` has.) A run is also
    complete once the stream has moved ``horizon`` seconds past its first record. Runs are
    yielded in the order they became complete; runs without a verdict (cut by the time range,
    or interrupted) are dropped: a measurement needs its verdict.
    """
    open_runs: dict[tuple[Any, ...], tuple[float, list[Mapping[str, Any]], bool]] = {}
    for record in records:
        now = _time(str(record["measurement_start_time"]))
        key = _run_key(record)
        is_verdict = record.get("record_type") == "verdict"
        current = open_runs.get(key)
        if current is not None and not (is_verdict and current[2]):
            current[1].append(record)
            if is_verdict:
                open_runs[key] = (current[0], current[1], True)
        else:
            if current is not None:  # the next run of the same target: the previous one is complete
                del open_runs[key]
                yield current[1]
            open_runs[key] = (now, [record], is_verdict)
        while open_runs:
            oldest = next(iter(open_runs))
            first, group, complete = open_runs[oldest]
            if now - first <= horizon:
                break
            del open_runs[oldest]
            if complete:
                yield group
    for _, group, complete in open_runs.values():
        if complete:
            yield group


def measurements(records: Iterable[Mapping[str, Any]]) -> Iterator[Measurement]:
    """Every complete target run's measurement, from records in time order."""
    for group in group_runs(records):
        yield measurement(group)
