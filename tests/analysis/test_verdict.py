"""The decision table, one test per row (probe/analysis/verdict.py), plus the known false positives."""

from __future__ import annotations

from typing import Any

import pytest

from probe.analysis.verdict import Controls, consistent, decide
from probe.checks.dns import DNSDetails
from probe.checks.http import HTTPDetails
from probe.checks.quic import QUICDetails
from probe.checks.tcp import TCPDetails
from probe.checks.tls import Certificate, TLSDetails
from probe.core import failures as F
from probe.core.config import Target
from probe.core.records import CheckResult

TARGET = Target(name="tg-web", service="telegram", category="messaging", host="web.telegram.test")


def _r(
    check: str, details: Any, failure: str | None = None, role: str = "target", op: str | None = None
) -> CheckResult[Any]:
    return CheckResult(check=check, target="tg-web", input="x", ok=failure is None, failure=failure,
                       failed_operation=op if failure else None, start_time=0.0, runtime=0.1,
                       details=details, role=role)  # type: ignore[arg-type]


def dns_r(addresses: tuple[str, ...] = ("198.18.1.10",), failure: str | None = None, role: str = "target",
          bogons: tuple[str, ...] = ()) -> CheckResult[Any]:
    details = DNSDetails("web.telegram.test", "system" if role == "target" else "https://doh", "udp", None,
                         "NOERROR", (), addresses, bogons, {})
    return _r("dns", details, failure, role, "resolve")


def tcp_r(failure: str | None = None, address: str = "198.18.1.10", role: str = "target") -> CheckResult[Any]:
    return _r("tcp", TCPDetails(address, 443), failure, role, "connect")


def tls_r(failure: str | None = None, role: str = "target", sni: str = "web.telegram.test",
          verified: bool = True, cert: Certificate | None = None) -> CheckResult[Any]:
    return _r("tls", TLSDetails("198.18.1.10", 443, sni, verified, (), certificate=cert), failure, role,
              "tls_handshake")


def http_r(failure: str | None = None, role: str = "target", status: int = 200, blockpage: str | None = None,
           verified: bool = True) -> CheckResult[Any]:
    details = HTTPDetails("https://web.telegram.test/", "198.18.1.10", status=status, blockpage=blockpage,
                          tls_verified=verified)
    return _r("http", details, failure, role, "http_round_trip")


OK_DNS = [dns_r(), dns_r(role="control")]
OK_PATH = [*OK_DNS, tcp_r(), tls_r(), http_r()]
CERT = Certificate("CN=web.telegram.test", "CN=Evil Interception CA", ("web.telegram.test",), 0, 0, "ab", False)


@pytest.mark.parametrize(
    ("rule", "results", "controls", "accessible", "blocking", "failure"),
    [
        ("no_measurement", [], Controls(), None, None, None),
        ("network_down", OK_PATH, Controls(network_ok=False), None, None, None),
        ("dns_bogon", [dns_r(("10.10.34.34",), F.DNS_BOGON, bogons=("10.10.34.34",)), dns_r(role="control")],
         Controls(), False, "dns", F.DNS_BOGON),
        ("dns_outage", [dns_r((), F.DNS_NXDOMAIN), dns_r((), F.DNS_NXDOMAIN, role="control")],
         Controls(), None, None, F.DNS_NXDOMAIN),
        ("dns_no_control", [dns_r((), F.DNS_SERVFAIL)], Controls(), None, None, F.DNS_SERVFAIL),
        ("dns_failure", [dns_r((), F.DNS_NXDOMAIN), dns_r(role="control"), tcp_r(), tls_r()],
         Controls(), False, "dns", F.DNS_NXDOMAIN),
        ("dns_failure", [dns_r((), F.GENERIC_TIMEOUT), dns_r(role="control")],
         Controls(), False, "dns", F.GENERIC_TIMEOUT),
        ("dns_inconsistent", [dns_r(("198.19.200.1",)), dns_r(role="control"), tcp_r(address="198.19.200.1"),
                              tls_r(F.SSL_INVALID_HOSTNAME)], Controls(), False, "dns", None),
        ("tcp_outage", [*OK_DNS, tcp_r(F.CONNECTION_REFUSED)], Controls(control_host_ok=False), None, None,
         F.CONNECTION_REFUSED),
        ("tcp_blocked", [*OK_DNS, tcp_r(F.GENERIC_TIMEOUT)], Controls(network_ok=True), False, "tcp_ip",
         F.GENERIC_TIMEOUT),
        ("tcp_blocked", [tcp_r(F.CONNECTION_REFUSED)], Controls(control_host_ok=True), False, "tcp_ip",
         F.CONNECTION_REFUSED),
        ("tls_origin_certificate", [*OK_DNS, tcp_r(), tls_r(F.SSL_INVALID_CERTIFICATE)], Controls(), True, False,
         F.SSL_INVALID_CERTIFICATE),
        ("tls_interception", [*OK_DNS, tcp_r(), tls_r(F.SSL_UNKNOWN_AUTHORITY, cert=CERT)], Controls(), False,
         "tls", F.SSL_UNKNOWN_AUTHORITY),
        ("tls_sni", [*OK_DNS, tcp_r(), tls_r(F.CONNECTION_RESET),
                     tls_r(role="control", sni="www.example.com", verified=False)],
         Controls(), False, "tls", F.CONNECTION_RESET),
        ("tls_sni", [*OK_DNS, tcp_r(), tls_r(F.GENERIC_TIMEOUT),
                     tls_r(role="control", sni="www.example.com", verified=False)],
         Controls(), False, "tls", F.GENERIC_TIMEOUT),
        ("tls_outage", [*OK_DNS, tcp_r(), tls_r(F.GENERIC_TIMEOUT), tls_r(F.GENERIC_TIMEOUT, role="control")],
         Controls(), False, None, F.GENERIC_TIMEOUT),
        ("http_blockpage", [*OK_DNS, tcp_r(), http_r(blockpage="ru_rkn_generic", verified=False)],
         Controls(), False, "http-diff", None),
        ("http_blockpage", [*OK_DNS, tcp_r(), http_r(status=451, verified=False)], Controls(), False,
         "http-diff", None),
        ("http_failure", [*OK_PATH[:-1], http_r(F.CONNECTION_RESET), http_r(role="control", verified=False)],
         Controls(), False, "http-failure", F.CONNECTION_RESET),
        ("http_outage", [*OK_PATH[:-1], http_r(F.GENERIC_TIMEOUT), http_r(F.GENERIC_TIMEOUT, role="control")],
         Controls(), False, None, F.GENERIC_TIMEOUT),
        ("quic_blocked", [*OK_PATH, _r("quic", QUICDetails("198.18.1.10", 443, "x", ("h3",)), F.GENERIC_TIMEOUT)],
         Controls(), False, "quic", F.GENERIC_TIMEOUT),
        ("throttling", OK_PATH, Controls(throttling={"blocking": "throttling", "estimated_rate_bps": 16000,
                                                      "control_rate_bps": 1e6, "direction": "down"}),
         True, "throttling", None),
        ("accessible", OK_PATH, Controls(network_ok=True), True, False, None),
    ],
)
def test_row(rule: str, results: list[CheckResult[Any]], controls: Controls, accessible: bool | None,
             blocking: str | bool | None, failure: str | None) -> None:
    verdict = decide(TARGET, results, controls, 123.0)
    assert (verdict.rule, verdict.accessible, verdict.blocking, verdict.failure) == (rule, accessible, blocking,
                                                                                     failure)
    assert verdict.reason
    assert set(verdict.evidence) <= {r.id for r in results}


def test_whatsapp_web_403_from_verified_origin_is_accessible() -> None:
    """OONI flagged web.whatsapp.com because it answers 403 to non-browsers; a verified origin answering
    403 is the origin, not a censor."""
    verdict = decide(TARGET, [*OK_PATH[:-1], http_r(status=403)], Controls(network_ok=True), 0)
    assert (verdict.accessible, verdict.blocking) == (True, False)


def test_blockpage_text_over_verified_https_is_not_http_diff() -> None:
    verdict = decide(TARGET, [*OK_PATH[:-1], http_r(blockpage="ru_rkn_generic", verified=True)], Controls(), 0)
    assert verdict.blocking is False


def test_one_failing_address_does_not_block_the_target() -> None:
    """One failing Telegram endpoint flagged the whole OONI telegram test; here a partial failure is noted."""
    results = [*OK_DNS, tcp_r(), tcp_r(F.GENERIC_TIMEOUT, address="198.18.1.11"), tls_r(), http_r()]
    verdict = decide(TARGET, results, Controls(network_ok=True), 0)
    assert (verdict.accessible, verdict.blocking) == (True, False)
    assert "1 of" in verdict.reason


def test_cdn_answer_differs_but_tls_verifies_is_not_dns_blocking() -> None:
    results = [dns_r(("198.19.7.7",)), dns_r(role="control"), tcp_r(address="198.19.7.7"), tls_r(), http_r()]
    assert decide(TARGET, results, Controls(), 0).blocking is False


def test_control_target_ignores_network_down() -> None:
    control = Target(name="ctl", service="control", category="control", host="c.test", control=True)
    assert decide(control, OK_PATH, Controls(network_ok=False), 0).rule == "accessible"


@pytest.mark.parametrize(
    ("answers", "control", "expected"),
    [
        (["198.18.1.10"], ["198.18.1.10"], True),
        (["198.18.1.10"], ["198.18.1.99"], True),  # same /24
        (["198.18.1.10"], ["198.18.2.10"], False),
        (["2001:67c:4e8:f004::a"], ["2001:67c:4e8:1::b"], True),  # same /48
        ([], ["198.18.1.1"], False),
    ],
)
def test_consistency(answers: list[str], control: list[str], expected: bool) -> None:
    assert consistent(answers, control) is expected
