"""Remote control: ask the test helper (probe/service/helper.py) whether it reaches address:port
(:func:`ask`), what page it gets for a URL (:func:`fetch_page`), and what the probe's own address
looks like from outside (to scrub it, never to record it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from probe.analysis.httpdiff import PAGE_CONTROL
from probe.checks.body import ACCEPT_ENCODING, read_capped, send_streamed
from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult

MAX_ANSWER = 1 << 16  # the helper's JSON answer is a few hundred bytes


@dataclass(frozen=True)
class ControlDetails:
    helper: str
    address: str
    port: int
    sni: str | None
    tcp_ok: bool | None = None
    tcp_failure: str | None = None
    tls_ok: bool | None = None
    tls_failure: str | None = None


async def _answer(client: httpx.AsyncClient, request: httpx.Request) -> Any:
    """The helper's JSON answer, read with a cap (a hostile middlebox cannot make it large)."""
    response = await send_streamed(client, request)
    try:
        answer = await read_capped(response, MAX_ANSWER)
    finally:
        await response.aclose()
    response.raise_for_status()
    return json.loads(answer.data)


WHOAMI_TIMEOUT = 5.0  # seconds: asked before measuring starts, so it must not hold a run up for long


async def whoami(helper: str, ctx: Context) -> bool:
    """Ask the helper for our address as it sees it (the public one behind a NAT) and add it to the
    addresses scrubbed from every record (``ctx.own``). Whether it answered; never raises."""
    try:
        async with httpx.AsyncClient(verify=ctx.ssl_context(), timeout=min(WHOAMI_TIMEOUT, ctx.settings.timeouts.http),
                                     trust_env=False, transport=ctx.http_transport) as client:
            body = await _answer(client, client.build_request("GET", helper.rstrip("/") + "/whoami",
                                                              headers={"accept-encoding": ACCEPT_ENCODING}))
        seen = body.get("client")
    except Exception:  # noqa: BLE001 - an old or unreachable helper: the interfaces' addresses remain
        return False
    if not isinstance(seen, str):
        return False
    ctx.own.learn(seen)
    return True


async def ask(
    helper: str, address: str, port: int, sni: str | None, ctx: Context, *, target: str
) -> CheckResult[ControlDetails]:
    """One question to the helper; ``ok`` means the helper answered (not that the target is up)."""
    start, t0 = ctx.clock(), ctx.monotonic()
    details = ControlDetails(helper, address, port, sni)
    failure: str | None = None
    try:
        async with httpx.AsyncClient(verify=ctx.ssl_context(), timeout=ctx.settings.timeouts.http,
                                     trust_env=False, transport=ctx.http_transport) as client:
            body = await _answer(client, client.build_request(
                "POST", helper.rstrip("/") + "/check", json={"address": address, "port": port, "sni": sni},
                headers={"accept-encoding": ACCEPT_ENCODING}))
        if isinstance(body.get("client"), str):  # our address as seen from outside: to scrub, never to record
            ctx.own.learn(body["client"])
        tls = body.get("tls") or {}
        details = ControlDetails(helper, address, port, sni, body["tcp"]["ok"], body["tcp"]["failure"],
                                 tls.get("ok"), tls.get("failure"))
    except Exception as exc:  # noqa: BLE001 - classified
        failure = failures.classify(exc)
    return CheckResult(
        check="control", target=target, input=f"{endpoint(address, port)} via {helper}", ok=failure is None,
        failure=failure, failed_operation=None if failure is None else "http_round_trip", start_time=start,
        runtime=ctx.monotonic() - t0, details=details, role="control",
        timings={"control": ctx.monotonic() - t0},
    )


@dataclass(frozen=True)
class PageControlDetails:
    """The helper's view of one URL: every hop of its redirect chain (see probe/service/helper.py)."""

    helper: str
    url: str
    hops: tuple[dict[str, Any], ...] = ()


async def fetch_page(helper: str, url: str, ctx: Context, *, target: str) -> CheckResult[PageControlDetails]:
    """Ask the helper to fetch ``url``; ``ok`` means it answered with at least one hop that got a status."""
    start, t0 = ctx.clock(), ctx.monotonic()
    details = PageControlDetails(helper, url)
    failure: str | None = None
    try:
        async with httpx.AsyncClient(verify=ctx.ssl_context(), timeout=ctx.settings.timeouts.http * 5,
                                     trust_env=False, transport=ctx.http_transport) as client:
            response = await client.post(helper.rstrip("/") + "/fetch",
                                         json={"url": url, "user_agent": ctx.settings.user_agent})
            response.raise_for_status()
            body = response.json()
        hops = tuple(h for h in body.get("hops") or () if isinstance(h, dict))
        details = PageControlDetails(helper, url, hops)
        if body.get("failure") or not hops:
            failure = str(body.get("failure") or f"{failures.UNKNOWN_PREFIX}: the helper fetched nothing")
        elif hops[0].get("status") is None:
            failure = str(hops[0].get("failure") or f"{failures.UNKNOWN_PREFIX}: no status")
    except Exception as exc:  # noqa: BLE001 - classified
        failure = failures.classify(exc)
    return CheckResult(
        check=PAGE_CONTROL, target=target, input=f"{url} via {helper}", ok=failure is None, failure=failure,
        failed_operation=None if failure is None else "http_round_trip", start_time=start,
        runtime=ctx.monotonic() - t0, details=details, role="control", timings={"control": ctx.monotonic() - t0},
    )
