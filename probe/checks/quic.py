"""QUIC check: one QUIC handshake (aioquic) to address:443/udp with the target's SNI.

UDP blocking is common and cheap for censors (Russia throttled and blocked QUIC
to push clients back to TCP, where SNI filtering works). A failed QUIC handshake
while TCP/TLS to the same host work is the ``quic`` blocking verdict.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration

from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role


@dataclass(frozen=True)
class QUICDetails:
    address: str
    port: int
    sni: str | None
    alpn: tuple[str, ...]
    negotiated_alpn: str | None = None
    version: int | None = None


async def handshake(
    address: str, port: int, sni: str | None, ctx: Context, *, target: str, role: Role = "target",
    alpn: tuple[str, ...] = ("h3",),
) -> CheckResult[QUICDetails]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=list(alpn), server_name=sni)
    configuration.verify_mode = ssl.CERT_REQUIRED if sni else ssl.CERT_NONE
    if ctx.settings.ca_bundle:
        configuration.load_verify_locations(cafile=ctx.settings.ca_bundle)
    start, t0 = ctx.clock(), ctx.monotonic()
    details = QUICDetails(address, port, sni, alpn)
    failure: str | None = None

    async def attempt() -> QUICDetails:
        async with connect(address, port, configuration=configuration, wait_connected=True) as client:
            quic = client._quic  # noqa: SLF001 - aioquic exposes the negotiated values only here
            return QUICDetails(address, port, sni, alpn, quic.tls.alpn_negotiated, int(quic._version or 0))

    try:
        details = await asyncio.wait_for(attempt(), ctx.settings.timeouts.tls)
    except Exception as exc:  # noqa: BLE001 - classified
        failure = failures.classify(exc)
    elapsed = ctx.monotonic() - t0
    return CheckResult(
        check="quic",
        target=target,
        input=f"udp {endpoint(address, port)} sni={sni or '-'}",
        ok=failure is None,
        failure=failure,
        failed_operation=None if failure is None else "quic_handshake",
        start_time=start,
        runtime=elapsed,
        details=details,
        role=role,
        timings={"quic_handshake": elapsed},
    )
