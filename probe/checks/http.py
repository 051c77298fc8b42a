"""HTTP(S) check: one request to one URL at one address, with a cap on the body.

The request goes to the address the pipeline chose (so that DNS manipulation is
measured by the DNS step, not hidden inside the HTTP step), with the URL's host
as ``Host`` and as SNI. Redirects are not followed: a redirect to a block page is
evidence, and its ``Location`` is matched against the fingerprints.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from probe.analysis import blockpages
from probe.analysis.blockpages import SCAN_BYTES, page_title  # page_title: here too, for the checks' users
from probe.checks.body import ACCEPT_ENCODING, read_capped, send_streamed
from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role

_KEPT_HEADERS = 32  # headers recorded; the rest are counted, not kept


@dataclass(frozen=True)
class HTTPDetails:
    url: str
    address: str | None
    status: int | None = None
    http_version: str | None = None
    headers: dict[str, str] | None = None
    header_count: int = 0
    location: str | None = None
    body_length: int = 0
    body_truncated: bool = False
    body_sha256: str | None = None
    title: str | None = None
    blockpage: str | None = None
    tls_verified: bool = False


def _at_address(url: str, address: str | None) -> str:
    if address is None:
        return url
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def fetch(
    url: str,
    address: str | None,
    ctx: Context,
    *,
    target: str,
    role: Role = "target",
    verify: bool = True,
) -> CheckResult[HTTPDetails]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    settings = ctx.settings
    start, t0 = ctx.clock(), ctx.monotonic()
    details = HTTPDetails(url=url, address=address)
    failure: str | None = None
    timeout = httpx.Timeout(
        settings.timeouts.http, connect=settings.timeouts.connect, pool=settings.timeouts.connect
    )
    try:
        async with httpx.AsyncClient(
            verify=ctx.ssl_context(verify=verify, alpn=("http/1.1",)),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            transport=ctx.http_transport,
        ) as client:
            request = client.build_request(
                "GET",
                _at_address(url, address),
                headers={"Host": parts.netloc, "User-Agent": settings.user_agent, "Accept": "*/*",
                         "Accept-Encoding": ACCEPT_ENCODING},
                extensions={"sni_hostname": host} if https else {},
            )
            details = await asyncio.wait_for(
                _round_trip(client, request, details, settings.http_max_body, https and verify), settings.timeouts.http
            )
    except Exception as exc:  # noqa: BLE001 - classified
        failure = failures.classify(exc)
    operation = None
    if failure is not None:
        operation = "tls_handshake" if failure.startswith("ssl_") else "http_round_trip"
    return CheckResult(
        check="http",
        target=target,
        input=url if address is None else f"{url} @ {endpoint(address, parts.port or (443 if https else 80))}",
        ok=failure is None,
        failure=failure,
        failed_operation=operation,
        start_time=start,
        runtime=ctx.monotonic() - t0,
        details=details,
        role=role,
        timings={"http_round_trip": ctx.monotonic() - t0},
    )


async def _round_trip(
    client: httpx.AsyncClient, request: httpx.Request, details: HTTPDetails, cap: int, verified: bool
) -> HTTPDetails:
    response = await send_streamed(client, request)
    try:
        body = await read_capped(response, cap)
    finally:
        await response.aclose()
    headers = dict(list(response.headers.items())[:_KEPT_HEADERS])
    location = response.headers.get("location")
    title = page_title(body.data)
    return HTTPDetails(
        url=details.url,
        address=details.address,
        status=response.status_code,
        http_version=response.http_version,
        headers=headers,
        header_count=len(response.headers),
        location=location,
        body_length=body.length,
        body_truncated=body.truncated,
        body_sha256=body.sha256,
        title=title,
        blockpage=blockpages.match(body.data[:SCAN_BYTES].decode("utf-8", "replace"), title, location, headers),
        tls_verified=verified,
    )
