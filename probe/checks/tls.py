"""TLS check: one handshake to one address:port with a chosen SNI.

The TCP connect and the handshake are timed separately (``connect``,
``tls_handshake``). A verified handshake checks the chain against the system CAs
plus the configured bundle, and the host name against the SNI. An unverified
handshake (``verify=False``) is the *control*: with an innocuous SNI on the same
address it asks only "does this server answer TLS at all?", which tells SNI
filtering apart from IP blocking. When verification fails, the leaf certificate
is still fetched without verification, so that an interception certificate is
kept as evidence.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role


@dataclass(frozen=True)
class Certificate:
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: float
    not_after: float
    sha256: str
    self_signed: bool


@dataclass(frozen=True)
class TLSDetails:
    address: str
    port: int
    sni: str | None
    verified: bool
    alpn_offered: tuple[str, ...]
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    certificate: Certificate | None = None
    cert_not_after: float | None = None


@functools.lru_cache(maxsize=1024)
def parse_certificate(der: bytes) -> Certificate:
    """Parsed once per distinct certificate: servers present the same one to every check."""
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = tuple(str(v) for v in ext.value.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in ext.value.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        sans = ()
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_before=cert.not_valid_before_utc.replace(tzinfo=dt.UTC).timestamp(),
        not_after=cert.not_valid_after_utc.replace(tzinfo=dt.UTC).timestamp(),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        self_signed=cert.subject == cert.issuer,
    )


@dataclass(frozen=True)
class _Session:
    version: str | None
    cipher: str | None
    alpn: str | None
    der: bytes | None


async def _handshake(
    address: str, port: int, sni: str | None, context: ssl.SSLContext, ctx: Context,
    timings: dict[str, float],
) -> _Session:
    t0 = ctx.monotonic()
    try:
        async with asyncio.timeout(ctx.settings.timeouts.connect):
            reader, writer = await ctx.open_connection(address, port)
    except Exception as exc:
        raise failures.ProbeError(failures.classify(exc), "connect", str(exc)) from exc
    timings["connect"] = ctx.monotonic() - t0
    t1 = ctx.monotonic()
    try:
        # start_tls is bounded by its own ssl_handshake_timeout: no second timer per check.
        await writer.start_tls(context, server_hostname=sni, ssl_handshake_timeout=ctx.settings.timeouts.tls)
        timings["tls_handshake"] = ctx.monotonic() - t1
        obj = writer.get_extra_info("ssl_object")
        cipher = obj.cipher()
        return _Session(
            obj.version(), cipher[0] if cipher else None, obj.selected_alpn_protocol(),
            obj.getpeercert(binary_form=True),
        )
    except Exception as exc:
        timings["tls_handshake"] = ctx.monotonic() - t1
        raise failures.ProbeError(failures.classify(exc), "tls_handshake", str(exc)) from exc
    finally:
        writer.close()


async def handshake(
    address: str,
    port: int,
    sni: str | None,
    ctx: Context,
    *,
    target: str,
    verify: bool = True,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    role: Role = "target",
) -> CheckResult[TLSDetails]:
    start, t0 = ctx.clock(), ctx.monotonic()
    timings: dict[str, float] = {}
    verify = verify and sni is not None  # no name, nothing to verify against
    details = TLSDetails(address, port, sni, verify, alpn)
    failure: str | None = None
    operation: str | None = None
    try:
        session = await _handshake(
            address, port, sni, ctx.ssl_context(verify=verify, alpn=alpn), ctx, timings
        )
        cert = parse_certificate(session.der) if session.der else None
        details = TLSDetails(
            address, port, sni, verify, alpn,
            version=session.version,
            cipher=session.cipher,
            alpn=session.alpn,
            certificate=cert,
            cert_not_after=cert.not_after if cert else None,
        )
    except Exception as exc:  # noqa: BLE001 - classified
        failure = failures.classify(exc)
        operation = failures.operation_of(exc, "tls_handshake")
        if failure.startswith("ssl_") and failure != failures.SSL_FAILED_HANDSHAKE:
            details = TLSDetails(address, port, sni, verify, alpn,
                                 certificate=await _evidence(address, port, sni, ctx))
    return CheckResult(
        check="tls",
        target=target,
        input=f"{endpoint(address, port)} sni={sni or '-'}",
        ok=failure is None,
        failure=failure,
        failed_operation=operation,
        start_time=start,
        runtime=ctx.monotonic() - t0,
        details=details,
        role=role,
        timings=timings,
    )


async def _evidence(address: str, port: int, sni: str | None, ctx: Context) -> Certificate | None:
    """The certificate a failed verification saw, fetched again without verification."""
    try:
        session = await _handshake(address, port, sni, ctx.ssl_context(verify=False), ctx, {})
        return parse_certificate(session.der) if session.der else None
    except Exception:  # noqa: BLE001 - evidence is best effort; the failure is already recorded
        return None
