"""The test helper: a control vantage point on the far side of the censor.

A probe alone cannot tell "the server is down" from "a censor rejects my
connections": both look the same from one place. OONI answers this with a test
helper that repeats the measurement from an uncensored network; so does this
one. The probe POSTs ``{"address", "port", "sni"}`` to ``/check`` over HTTPS (so
the censor cannot tamper with the answer) and the helper answers with its own
TCP connect and TLS handshake results, produced by the same check functions, and
``client``: the probe's address as the helper sees it (its public address behind a
NAT, as OONI's probe services tell it), which the probe adds to the addresses it
scrubs from its records (probe.core.privacy) and never records. ``GET /whoami``
answers ``{"client": ...}`` alone: the probe asks it before it measures.

The lab runs one in its server namespace; a deployment may run ``probe helper``
on a server outside the censored network and point ``settings.test_helper`` at it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from probe.checks import tcp, tls
from probe.core.config import Settings, Timeouts
from probe.core.context import Context
from probe.core.records import ProbeMeta
from probe.service.httpd import Request, Response

MAX_PORT = 65535


def _valid(body: Any) -> tuple[str, int, str | None]:
    import ipaddress

    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    address, port, sni = body.get("address"), body.get("port"), body.get("sni")
    ipaddress.ip_address(str(address))
    if not isinstance(port, int) or not 0 < port <= MAX_PORT:
        raise ValueError("bad port")
    if sni is not None and not isinstance(sni, str):
        raise ValueError("bad sni")
    return str(address), port, sni


async def check(address: str, port: int, sni: str | None, ctx: Context) -> dict[str, Any]:
    """What this vantage point sees: a connect, and a handshake when an SNI is given."""
    connect = await tcp.connect(address, port, ctx, target="helper")
    out: dict[str, Any] = {"tcp": {"ok": connect.ok, "failure": connect.failure}}
    if connect.ok and sni:
        shake = await tls.handshake(address, port, sni, ctx, target="helper", verify=False)
        out["tls"] = {"ok": shake.ok, "failure": shake.failure}
    return out


def handle(ca_bundle: Path | None = None, timeout: float = 3.0) -> Callable[[Request], Awaitable[Response]]:
    settings = Settings(ca_bundle=str(ca_bundle) if ca_bundle else None,
                        timeouts=Timeouts(dns=timeout, connect=timeout, tls=timeout, http=timeout))
    ctx = Context(settings=settings, meta=ProbeMeta(probe_id="helper"))

    async def app(request: Request) -> Response:
        if request.method == "GET" and request.path == "/whoami":
            return Response(200, json.dumps({"client": request.peer}).encode(), {"Content-Type": "application/json"})
        if request.method != "POST" or request.path != "/check":
            return Response(404, b'{"error": "POST /check"}', {"Content-Type": "application/json"})
        try:
            address, port, sni = _valid(json.loads(request.body))
        except (ValueError, TypeError) as exc:
            return Response(400, json.dumps({"error": str(exc)}).encode(), {"Content-Type": "application/json"})
        result = {**await check(address, port, sni, ctx), "client": request.peer}
        return Response(200, json.dumps(result).encode(), {"Content-Type": "application/json"})

    return app
