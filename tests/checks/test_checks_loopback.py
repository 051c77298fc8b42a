"""Every check against real servers on 127.0.0.1: each case ends with the right failure
string within its timeout, with no crash and no hang."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import trustme

from probe.checks import dns, http, tcp, tls
from probe.core import failures as F
from probe.core.config import parse_resolver
from tests.conftest import make_context, server_context
from tests.loopback import DNSServer, Server, closed_port, eof_app, http_app, rst_app, silent_app

# -- DNS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "failure", "addresses"),
    [
        ("ok.test", None, ("198.18.1.10",)),
        ("nx.test", F.DNS_NXDOMAIN, ()),
        ("bogon.test", F.DNS_BOGON, ("10.0.0.1",)),
        ("zero.test", F.DNS_BOGON, ("0.0.0.0",)),
        ("servfail.test", F.DNS_SERVFAIL, ()),
        ("refused.test", F.DNS_REFUSED, ()),
        ("silent.test", F.GENERIC_TIMEOUT, ()),
        ("v6only.test", None, ("2001:67c:4e8:f004::a",)),
        ("nothing.test", F.DNS_NO_ANSWER, ()),
    ],
)
@pytest.mark.parametrize("scheme", ["udp", "tcp"])
async def test_dns_outcomes(ctx, name: str, failure: str | None, addresses: tuple[str, ...], scheme: str) -> None:
    async with DNSServer() as server:
        spec = parse_resolver(f"{scheme}://127.0.0.1:{server.port}")
        t0 = time.monotonic()
        result = await dns.resolve(name, spec, ctx, target="t")
    assert result.failure == failure
    assert result.ok is (failure is None)
    assert result.details.addresses == addresses
    assert time.monotonic() - t0 < ctx.settings.timeouts.dns + 1
    if failure is not None:
        assert result.failed_operation == "resolve"


async def test_dns_records_rcode_ttl_and_timings(ctx) -> None:
    async with DNSServer() as server:
        result = await dns.resolve("ok.test", parse_resolver(f"udp://127.0.0.1:{server.port}"), ctx, target="t")
    assert result.details.rcode == "NOERROR"
    assert result.details.answers[0].ttl == 300
    assert set(result.timings) == {"resolve_a", "resolve_aaaa"}
    assert result.details.outcomes == {"A": "ok", "AAAA": F.DNS_NO_ANSWER}


async def test_dns_truncated_udp_falls_back_to_tcp(ctx) -> None:
    async with DNSServer() as server:
        result = await dns.resolve("big.test", parse_resolver(f"udp://127.0.0.1:{server.port}"), ctx, target="t")
    assert result.ok
    assert len(result.details.addresses) == 60


async def test_doh_against_loopback(ctx, ca: trustme.CA) -> None:
    """RFC 8484 POST over httpx, against a DoH endpoint with the test CA."""
    from tests.loopback import dns_response

    async def doh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
        reply = dns_response(await reader.readexactly(length), tcp=True) or b""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\nContent-Length: "
                     + str(len(reply)).encode() + b"\r\nConnection: close\r\n\r\n" + reply)
        await writer.drain()
        writer.close()

    async with Server(doh, server_context(ca, "127.0.0.1")) as server:
        spec = parse_resolver(f"https://127.0.0.1:{server.port}/dns-query")
        ok = await dns.resolve("ok.test", spec, ctx, target="t", role="control")
        nx = await dns.resolve("nx.test", spec, ctx, target="t", role="control")
    assert ok.ok and ok.details.addresses == ("198.18.1.10",)
    assert nx.failure == F.DNS_NXDOMAIN


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "127.0.0.1", "169.254.1.1", "192.168.1.1",
                                     "172.16.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1"])
def test_bogons(address: str) -> None:
    assert dns.is_bogon(address)


@pytest.mark.parametrize("address", ["149.154.167.51", "198.18.0.10", "2001:67c:4e8:f004::a"])
def test_not_bogons(address: str) -> None:
    assert not dns.is_bogon(address)


# -- TCP ------------------------------------------------------------------------------------


async def test_tcp_ok_and_refused(ctx) -> None:
    async with Server(http_app) as server:
        ok = await tcp.connect("127.0.0.1", server.port, ctx, target="t")
    refused = await tcp.connect("127.0.0.1", closed_port(), ctx, target="t")
    assert ok.ok and ok.timings["connect"] > 0
    assert refused.failure == F.CONNECTION_REFUSED and refused.failed_operation == "connect"


async def test_tcp_timeout_through_injected_transport(ca_file: Path) -> None:
    """A SYN that is never answered, emulated by an injected connector (loopback always answers)."""

    async def black_hole(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        await asyncio.sleep(60)

    ctx = make_context(ca_file)
    ctx.open_connection = black_hole
    t0 = time.monotonic()
    result = await tcp.connect("198.18.9.9", 443, ctx, target="t")
    assert result.failure == F.GENERIC_TIMEOUT
    assert time.monotonic() - t0 < ctx.settings.timeouts.connect + 0.5


# -- TLS ------------------------------------------------------------------------------------


async def test_tls_ok_records_certificate(ctx, good_tls) -> None:
    async with Server(http_app, good_tls) as server:
        result = await tls.handshake("127.0.0.1", server.port, "good.test", ctx, target="t")
    assert result.ok, result.failure
    d = result.details
    assert d.verified and d.version in ("TLSv1.2", "TLSv1.3") and d.cipher
    assert d.certificate is not None and "good.test" in d.certificate.sans
    assert d.cert_not_after and d.cert_not_after > time.time()
    assert set(result.timings) == {"connect", "tls_handshake"}


@pytest.mark.parametrize(
    ("app", "failure"),
    [(rst_app, F.CONNECTION_RESET), (eof_app, F.EOF_ERROR), (silent_app, F.GENERIC_TIMEOUT)],
)
async def test_tls_network_failures(ctx, app, failure: str) -> None:
    async with Server(app) as server:
        t0 = time.monotonic()
        result = await tls.handshake("127.0.0.1", server.port, "good.test", ctx, target="t")
    assert result.failure == failure
    assert result.failed_operation == "tls_handshake"
    assert time.monotonic() - t0 < ctx.settings.timeouts.tls + ctx.settings.timeouts.connect + 0.5


async def test_tls_refused_is_a_connect_failure(ctx) -> None:
    result = await tls.handshake("127.0.0.1", closed_port(), "good.test", ctx, target="t")
    assert result.failure == F.CONNECTION_REFUSED and result.failed_operation == "connect"


async def test_tls_wrong_hostname(ctx, ca) -> None:
    async with Server(http_app, server_context(ca, "other.test")) as server:
        result = await tls.handshake("127.0.0.1", server.port, "good.test", ctx, target="t")
    assert result.failure == F.SSL_INVALID_HOSTNAME
    assert result.details.certificate is not None and "other.test" in result.details.certificate.sans


async def test_tls_unknown_authority_keeps_interception_certificate(ctx, other_ca) -> None:
    async with Server(http_app, server_context(other_ca, "good.test")) as server:
        result = await tls.handshake("127.0.0.1", server.port, "good.test", ctx, target="t")
    assert result.failure == F.SSL_UNKNOWN_AUTHORITY
    assert result.details.certificate is not None  # the interceptor's certificate is evidence


async def test_tls_expired_certificate(ctx, ca) -> None:
    async with Server(http_app, server_context(ca, "good.test", expired=True)) as server:
        result = await tls.handshake("127.0.0.1", server.port, "good.test", ctx, target="t")
    assert result.failure == F.SSL_INVALID_CERTIFICATE


async def test_tls_control_handshake_is_unverified(ctx, ca) -> None:
    async with Server(http_app, server_context(ca, "good.test")) as server:
        result = await tls.handshake("127.0.0.1", server.port, "www.example.com", ctx, target="t",
                                     verify=False, role="control")
    assert result.ok and result.role == "control" and not result.details.verified


# -- HTTP -------------------------------------------------------------------------------------


async def _fetch(ctx, path: str, tls_context=None, **kw):  # type: ignore[no-untyped-def]
    async with Server(http_app, tls_context) as server:
        scheme = "https" if tls_context else "http"
        return await http.fetch(f"{scheme}://good.test:{server.port}{path}", "127.0.0.1", ctx, target="t", **kw)


async def test_https_ok(ctx, good_tls) -> None:
    result = await _fetch(ctx, "/", good_tls)
    assert result.ok and result.details.status == 200 and result.details.title == "Hello"
    assert result.details.tls_verified and result.details.blockpage is None


async def test_http_blockpage_fingerprint(ctx) -> None:
    result = await _fetch(ctx, "/blockpage")
    assert result.ok and result.details.blockpage == "ru_rkn_generic"


async def test_http_403_is_an_answer_not_a_failure(ctx, good_tls) -> None:
    result = await _fetch(ctx, "/forbidden", good_tls)
    assert result.ok and result.details.status == 403


async def test_http_huge_body_is_capped_not_read(ctx) -> None:
    t0 = time.monotonic()
    result = await _fetch(ctx, "/huge")
    assert result.ok and result.details.body_truncated
    assert result.details.body_length == ctx.settings.http_max_body
    assert time.monotonic() - t0 < 5


async def test_http_100kb_headers(ctx) -> None:
    result = await _fetch(ctx, "/bigheaders")
    # h11 refuses header blocks over its limit; either way the outcome is named, not a crash.
    if result.ok:
        assert result.details.header_count >= 100 and len(result.details.headers or {}) <= 32
    else:
        assert result.failure == F.HTTP_PROTOCOL_ERROR


async def test_http_reset_and_hang(ctx) -> None:
    reset = await _fetch(ctx, "/reset")
    assert reset.failure == F.CONNECTION_RESET  # the same on every loop (tests/conftest.py runs both)
    assert reset.failed_operation == "http_round_trip"
    t0 = time.monotonic()
    hang = await _fetch(ctx, "/hang")
    assert hang.failure == F.GENERIC_TIMEOUT
    assert time.monotonic() - t0 < ctx.settings.timeouts.http + 1


async def test_https_unknown_authority_is_a_tls_failure(ctx, other_ca) -> None:
    result = await _fetch(ctx, "/", server_context(other_ca, "good.test"))
    assert result.failure == F.SSL_UNKNOWN_AUTHORITY and result.failed_operation == "tls_handshake"
