"""The failure vocabulary, and the one place that turns exceptions into it.

Every measurement that fails carries an OONI-compatible failure string and the
operation that failed. This module is the only one that names failures: checks
raise or catch whatever their libraries raise, then call :func:`classify`.

Classification goes in order, like OONI netxlite's ``classify.go``:

1. an exception that is already a :class:`ProbeError` keeps its failure
   (the innermost operation wins);
2. timeouts;
3. DNS library outcomes (dnspython);
4. TLS certificate and handshake errors;
5. errno values of ``OSError``, then the causes that libraries chain
   (httpx wraps OSError in ``ConnectError``);
6. anything else: ``unknown_failure: <message>`` with addresses scrubbed.

It never raises: an unknown exception is a measurement result, not a crash.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import ssl
from typing import Final, Literal

# -- Failure strings (OONI names) ------------------------------------------------

GENERIC_TIMEOUT: Final = "generic_timeout_error"
CONNECTION_REFUSED: Final = "connection_refused"
CONNECTION_RESET: Final = "connection_reset"
HOST_UNREACHABLE: Final = "host_unreachable"
NETWORK_UNREACHABLE: Final = "network_unreachable"
EOF_ERROR: Final = "eof_error"
DNS_NXDOMAIN: Final = "dns_nxdomain_error"
DNS_NO_ANSWER: Final = "dns_no_answer"
DNS_SERVFAIL: Final = "dns_servfail_error"
DNS_REFUSED: Final = "dns_refused_error"
DNS_BOGON: Final = "dns_bogon_error"
DNS_FORMAT: Final = "dns_format_error"
SSL_INVALID_HOSTNAME: Final = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY: Final = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE: Final = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE: Final = "ssl_failed_handshake"
HTTP_PROTOCOL_ERROR: Final = "http_protocol_error"
HTTP_BODY_TOO_LARGE: Final = "http_response_too_large"
HTTP_DECODING: Final = "http_response_decoding_error"  # extension: a body that does not inflate
DNS_WRONG_QUERY_ID: Final = "dns_reply_with_wrong_query_id"  # OONI's, also for a reply from elsewhere
JSON_PARSE: Final = "json_parse_error"
PERMISSION_DENIED: Final = "operation_not_permitted"
ADDRESS_FAMILY_UNSUPPORTED: Final = "address_family_not_supported"
UNKNOWN_PREFIX: Final = "unknown_failure"

#: The fixed vocabulary (without the open-ended unknown_failure message). Metrics use
#: :func:`metric_label` so that their ``failure`` label stays within this set.
KNOWN: Final[frozenset[str]] = frozenset(
    {
        GENERIC_TIMEOUT,
        CONNECTION_REFUSED,
        CONNECTION_RESET,
        HOST_UNREACHABLE,
        NETWORK_UNREACHABLE,
        EOF_ERROR,
        DNS_NXDOMAIN,
        DNS_NO_ANSWER,
        DNS_SERVFAIL,
        DNS_REFUSED,
        DNS_BOGON,
        DNS_FORMAT,
        SSL_INVALID_HOSTNAME,
        SSL_UNKNOWN_AUTHORITY,
        SSL_INVALID_CERTIFICATE,
        SSL_FAILED_HANDSHAKE,
        HTTP_PROTOCOL_ERROR,
        HTTP_BODY_TOO_LARGE,
        HTTP_DECODING,
        DNS_WRONG_QUERY_ID,
        JSON_PARSE,
        PERMISSION_DENIED,
        ADDRESS_FAMILY_UNSUPPORTED,
    }
)

Operation = Literal[
    "resolve", "connect", "tls_handshake", "http_round_trip", "read", "write", "quic_handshake"
]
OPERATIONS: Final[frozenset[str]] = frozenset(Operation.__args__)  # type: ignore[attr-defined]


class ProbeError(Exception):
    """An exception that already knows its failure string and operation.

    Raised by checks for outcomes that are not library exceptions (a bogon DNS
    answer, a body over the cap) and used to wrap library exceptions once they
    have been classified, keeping the original as ``__cause__``.
    """

    def __init__(self, failure: str, operation: Operation, message: str = "") -> None:
        super().__init__(message or failure)
        self.failure = failure
        self.operation = operation


def metric_label(failure: str | None) -> str:
    """Bounded label value for Prometheus: a known string, ``unknown_failure`` or ``none``."""
    if failure is None:
        return "none"
    return failure if failure in KNOWN else UNKNOWN_PREFIX


#: Our strings that OONI spells differently (probe-cli's netxlite emits ``dns_server_misbehaving``
#: for every rcode other than NXDOMAIN, SERVFAIL and REFUSED, FORMERR included).
_OONI_NAMES: Final[dict[str, str]] = {DNS_FORMAT: "dns_server_misbehaving"}
#: Our strings with no OONI equivalent, kept as extensions (docs/records.md lists them). OONI
#: writes ``unknown_failure: <text>`` for a malformed HTTP reply and for EPERM, and truncates an
#: oversized body without a failure.
OONI_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {HTTP_PROTOCOL_ERROR, HTTP_BODY_TOO_LARGE, PERMISSION_DENIED, HTTP_DECODING}
)


def ooni(failure: str | None) -> str | None:
    """The failure as OONI writes it in a measurement (the OONI name where OONI has one)."""
    if failure is None:
        return None
    return _OONI_NAMES.get(failure, failure)

# -- Scrubbing -------------------------------------------------------------------

_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")


def scrub(message: str) -> str:
    """Remove IP addresses from a message, so that no record leaks the probe's own IP."""
    return _IPV6.sub("[scrubbed]", _IPV4.sub("[scrubbed]", message))


# -- Classification ----------------------------------------------------------------

_ERRNO: Final[dict[int, str]] = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.EHOSTDOWN: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
    errno.EACCES: PERMISSION_DENIED,
    errno.EPERM: PERMISSION_DENIED,
    errno.EAFNOSUPPORT: ADDRESS_FAMILY_UNSUPPORTED,
}

# OpenSSL X509 verify codes (include/openssl/x509_vfy.h).
_X509_HOSTNAME_MISMATCH: Final = 62
_X509_UNKNOWN_AUTHORITY: Final = frozenset({2, 18, 19, 20, 21})

# String suffixes, for libraries that lose errno (last resort before unknown).
_SUFFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("connection refused", CONNECTION_REFUSED),
    ("connection reset by peer", CONNECTION_RESET),
    ("no route to host", HOST_UNREACHABLE),
    ("network is unreachable", NETWORK_UNREACHABLE),
    ("timed out", GENERIC_TIMEOUT),
    ("unexpected eof", EOF_ERROR),
    ("eof occurred in violation of protocol", EOF_ERROR),
    ("server disconnected without sending a response", EOF_ERROR),
    ("peer closed connection without sending complete message body", EOF_ERROR),
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first, without cycles."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _classify_one(exc: BaseException) -> str | None:
    if isinstance(exc, ProbeError):
        return exc.failure
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return GENERIC_TIMEOUT
    dns_failure = _classify_dns(exc)
    if dns_failure is not None:
        return dns_failure
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == _X509_HOSTNAME_MISMATCH:
            return SSL_INVALID_HOSTNAME
        if code in _X509_UNKNOWN_AUTHORITY:
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EOF_ERROR
    if isinstance(exc, ssl.SSLError):
        return SSL_FAILED_HANDSHAKE
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF_ERROR
    if isinstance(exc, ConnectionAbortedError) and "taking longer than" in str(exc):
        return GENERIC_TIMEOUT  # asyncio's ssl_handshake_timeout aborts the connection
    if isinstance(exc, ConnectionResetError) and exc.errno is None:
        # asyncio's TLS layer reports a peer's FIN during the handshake as a bare
        # ConnectionResetError() with no errno: that is an EOF, not an RST.
        return EOF_ERROR
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    return _classify_httpx(exc)


def _classify_dns(exc: BaseException) -> str | None:
    import dns.exception
    import dns.query
    import dns.resolver

    if isinstance(exc, dns.query.UnexpectedSource | dns.query.BadResponse):
        return DNS_WRONG_QUERY_ID
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DNS_NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return DNS_NO_ANSWER
    if isinstance(exc, dns.resolver.NoNameservers):
        return DNS_REFUSED if "REFUSED" in str(exc) else DNS_SERVFAIL
    if isinstance(exc, dns.exception.Timeout):
        return GENERIC_TIMEOUT
    if isinstance(exc, dns.exception.FormError | dns.exception.SyntaxError):
        return DNS_FORMAT
    return None


def _classify_httpx(exc: BaseException) -> str | None:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return GENERIC_TIMEOUT
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc).lower()
        for suffix, failure in _SUFFIXES:
            if suffix in text:
                return failure
        return HTTP_PROTOCOL_ERROR
    if isinstance(exc, httpx.LocalProtocolError):
        return HTTP_PROTOCOL_ERROR
    if isinstance(exc, httpx.DecodingError):
        return HTTP_DECODING
    if isinstance(exc, json.JSONDecodeError):
        return JSON_PARSE
    return None


def classify(exc: BaseException) -> str:
    """Map any exception to a failure string. Never raises."""
    try:
        for link in _chain(exc):
            found = _classify_one(link)
            if found is not None:
                return found
        text = str(exc).lower()
        for suffix, failure in _SUFFIXES:
            if suffix in text:
                return failure
        message = str(exc) or type(exc).__name__
        return f"{UNKNOWN_PREFIX}: {scrub(message)}"
    except Exception as inner:  # classification itself must never crash a measurement
        return f"{UNKNOWN_PREFIX}: classify failed: {type(inner).__name__}"


def operation_of(exc: BaseException, default: Operation) -> Operation:
    """The innermost operation that failed: a wrapped ProbeError's, or ``default``."""
    for link in reversed(_chain(exc)):
        if isinstance(link, ProbeError):
            return link.operation
    return default


# -- A failed write, classified by what the connection saw ---------------------------

#: How long a failed write waits for the connection to say why. The reset that broke the
#: write is already in the kernel (or already stored by the loop): the read returns at once.
WRITE_EVIDENCE_WAIT: Final = 0.5


def _errno_of(exc: BaseException) -> int | None:
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in _ERRNO:
            return link.errno
    return None


async def write_error(
    exc: BaseException, reader: asyncio.StreamReader | None, wait: float = WRITE_EVIDENCE_WAIT
) -> ProbeError:
    """A failed ``write``/``drain`` after a successful connect, classified the same on every loop.

    Which exception a write raises depends on when the event loop noticed the peer's reset:
    the errno (``ECONNRESET``, ``EPIPE``), a bare ``ConnectionResetError('Connection lost')``
    from ``drain`` (the loop closed the transport between the write and the drain: uvloop
    does this whenever its direct write meets the reset), or uvloop's ``RuntimeError`` for a
    write on a transport it has already closed. Only the first says what happened. The
    connection itself knows: one read returns the stored or pending error (``ECONNRESET``:
    ``connection_reset``) or EOF for a peer that closed (``eof_error``), and the operation is
    then ``read``, as on a loop that noticed the reset only when reading. Without evidence
    (the read times out, or the write's own errno was the news) the write's classification
    stands. The result wraps ``exc`` (raise it ``from exc``).
    """
    first = classify(exc)
    if reader is None or first == GENERIC_TIMEOUT:
        return ProbeError(first, "write", str(exc))
    try:
        data = await asyncio.wait_for(reader.read(1), wait)
    except Exception as seen:  # noqa: BLE001 - the connection's own error is the evidence
        found = classify(seen)
        if found.startswith(UNKNOWN_PREFIX) or found == GENERIC_TIMEOUT:
            return ProbeError(first, "write", str(exc))
        return ProbeError(found, "read", str(seen))
    if not data and _errno_of(exc) is None:
        return ProbeError(EOF_ERROR, "read", "closed by the peer")
    return ProbeError(first, "write", str(exc))  # the kernel's errno on the write itself
