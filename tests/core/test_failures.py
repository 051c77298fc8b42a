"""The taxonomy: every exception maps to a known failure string, or unknown_failure scrubbed."""

from __future__ import annotations

import asyncio
import errno
import ssl

import dns.exception
import dns.resolver
import httpx
import pytest

from probe.core import failures as F


def _cert_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


def _chained(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (TimeoutError(), F.GENERIC_TIMEOUT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), F.CONNECTION_REFUSED),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), F.CONNECTION_RESET),
        (ConnectionResetError(), F.EOF_ERROR),
        (ConnectionAbortedError("SSL handshake is taking longer than 1.5 seconds: aborting the connection"),
         F.GENERIC_TIMEOUT),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), F.CONNECTION_RESET),
        (OSError(errno.EHOSTUNREACH, "No route to host"), F.HOST_UNREACHABLE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), F.NETWORK_UNREACHABLE),
        (OSError(errno.ETIMEDOUT, "timed out"), F.GENERIC_TIMEOUT),
        (OSError(errno.EACCES, "denied"), F.PERMISSION_DENIED),
        (asyncio.IncompleteReadError(b"", 10), F.EOF_ERROR),
        (EOFError(), F.EOF_ERROR),
        (dns.resolver.NXDOMAIN(), F.DNS_NXDOMAIN),
        (dns.resolver.NoAnswer(), F.DNS_NO_ANSWER),
        (dns.exception.Timeout(), F.GENERIC_TIMEOUT),
        (dns.exception.FormError(), F.DNS_FORMAT),
        (_cert_error(62), F.SSL_INVALID_HOSTNAME),
        (_cert_error(20), F.SSL_UNKNOWN_AUTHORITY),
        (_cert_error(19), F.SSL_UNKNOWN_AUTHORITY),
        (_cert_error(10), F.SSL_INVALID_CERTIFICATE),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), F.EOF_ERROR),
        (ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION]"), F.SSL_FAILED_HANDSHAKE),
        (httpx.ConnectTimeout("x"), F.GENERIC_TIMEOUT),
        (httpx.ReadTimeout("x"), F.GENERIC_TIMEOUT),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), F.EOF_ERROR),
        (httpx.RemoteProtocolError("illegal header line"), F.HTTP_PROTOCOL_ERROR),
        (_chained(httpx.ConnectError("x"), ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
         F.CONNECTION_REFUSED),
        (_chained(RuntimeError("wrapper"), _cert_error(62)), F.SSL_INVALID_HOSTNAME),
        (F.ProbeError(F.DNS_BOGON, "resolve"), F.DNS_BOGON),
        (RuntimeError("something failed: [Errno 111] Connection refused"), F.CONNECTION_REFUSED),
    ],
)
def test_classify(exc: BaseException, failure: str) -> None:
    assert F.classify(exc) == failure


def test_unknown_failure_scrubs_addresses() -> None:
    got = F.classify(RuntimeError("weird thing from 203.0.113.7 and 2001:db8::1 port 5"))
    assert got.startswith("unknown_failure: ")
    assert "203.0.113.7" not in got and "2001:db8::1" not in got
    assert "[scrubbed]" in got


def test_classify_never_raises_even_for_hostile_exceptions() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    assert F.classify(Hostile()).startswith("unknown_failure")


def test_chain_cycles_terminate() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert F.classify(a).startswith("unknown_failure")


def test_innermost_operation_wins() -> None:
    inner = F.ProbeError(F.CONNECTION_REFUSED, "connect")
    outer = F.ProbeError(F.CONNECTION_REFUSED, "tls_handshake")
    outer.__cause__ = inner
    assert F.operation_of(outer, "http_round_trip") == "connect"
    assert F.operation_of(RuntimeError(), "read") == "read"


@pytest.mark.parametrize(
    ("failure", "label"),
    [(None, "none"), (F.CONNECTION_RESET, F.CONNECTION_RESET), ("unknown_failure: boom at x", "unknown_failure")],
)
def test_metric_label_is_bounded(failure: str | None, label: str) -> None:
    assert F.metric_label(failure) == label


def test_vocabulary_is_ooni_compatible() -> None:
    required = {
        "generic_timeout_error", "connection_refused", "connection_reset", "host_unreachable",
        "network_unreachable", "eof_error", "dns_nxdomain_error", "dns_no_answer", "dns_servfail_error",
        "dns_refused_error", "dns_bogon_error", "ssl_invalid_hostname", "ssl_unknown_authority",
        "ssl_invalid_certificate", "ssl_failed_handshake",
    }
    assert required <= F.KNOWN
