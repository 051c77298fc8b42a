"""Remote control: ask the test helper (probe/service/helper.py) whether it reaches address:port."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

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
            request = client.build_request("POST", helper.rstrip("/") + "/check",
                                           json={"address": address, "port": port, "sni": sni},
                                           headers={"accept-encoding": ACCEPT_ENCODING})
            response = await send_streamed(client, request)
            try:
                answer = await read_capped(response, MAX_ANSWER)
            finally:
                await response.aclose()
            response.raise_for_status()
            body = json.loads(answer.data)
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
