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

``POST /fetch`` with ``{"url", "user_agent"}`` fetches a web page as the probe would, from here:
the helper resolves the name with its own resolver and follows redirects (at most
:data:`MAX_HOPS`, the whole fetch bounded by :data:`FETCH_SECONDS`, each body capped by
:data:`MAX_BODY`), and answers with every hop's status, body length, title, header names,
``Location``, body hash, language and structure signature, the inputs of
probe/analysis/httpdiff.py. Names that resolve to bogons (private, loopback...) fail at the
DNS step, and literal bogon addresses are refused, so the helper cannot be used to reach its own
network (``allow_bogons`` is for tests on loopback only).

The lab runs one in its server namespace; a deployment may run ``probe helper``
on a server outside the censored network and point ``settings.test_helper`` at it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from probe.checks import dns, http, tcp, tls
from probe.core import failures
from probe.core.config import Settings, Timeouts, parse_resolver
from probe.core.context import Context
from probe.core.records import ProbeMeta
from probe.service.httpd import Request, Response

MAX_PORT = 65535
MAX_HOPS = 5  # redirects followed by /fetch
MAX_BODY = 1 << 20  # bytes of each body read by /fetch (the probe's default http_max_body)
FETCH_SECONDS = 15.0  # the whole /fetch, every hop included
MAX_URL = 2048
_HOP_KEYS = ("url", "status", "body_length", "body_truncated", "title", "header_names", "location",
             "body_sha256", "lang", "shape", "tls_verified")


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


def _valid_fetch(body: Any) -> tuple[str, str | None]:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    url, agent = body.get("url"), body.get("user_agent")
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ValueError("bad url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be http:// or https:// with a host")
    if agent is not None and (not isinstance(agent, str) or len(agent) > 512):  # noqa: PLR2004
        raise ValueError("bad user_agent")
    return url, agent


async def _hop(url: str, ctx: Context, allow_bogons: bool) -> dict[str, Any]:
    host = urlsplit(url).hostname or ""
    try:
        import ipaddress

        ipaddress.ip_address(host)
        address = host
        if dns.is_bogon(address) and not allow_bogons:
            return {"url": url, "status": None, "failure": failures.DNS_BOGON, "failed_operation": "dns"}
    except ValueError:
        lookup = await dns.resolve(host, ctx.settings.resolvers[0], ctx, target="helper", qtypes=("A",))
        if not lookup.ok or not lookup.details.addresses:
            return {"url": url, "status": None, "failure": lookup.failure or failures.DNS_NO_ANSWER,
                    "failed_operation": "dns"}
        address = lookup.details.addresses[0]
    result = await http.fetch(url, address, ctx, target="helper")
    details = dataclasses.asdict(result.details)
    return {**{k: details[k] for k in _HOP_KEYS}, "failure": result.failure,
            "failed_operation": result.failed_operation}


async def fetch(url: str, ctx: Context, *, allow_bogons: bool = False) -> dict[str, Any]:
    """The page at ``url`` as this vantage point sees it: every hop of its redirect chain."""
    hops: list[dict[str, Any]] = []
    while len(hops) <= MAX_HOPS:
        hop = await _hop(url, ctx, allow_bogons)
        hops.append(hop)
        location = hop.get("location")
        if hop.get("status") not in (301, 302, 303, 307, 308) or not location:
            break
        url = urljoin(url, location)
        if urlsplit(url).scheme not in ("http", "https"):
            break
    return {"hops": hops}


def handle(ca_bundle: Path | None = None, timeout: float = 3.0, resolver: str = "system",
           allow_bogons: bool = False) -> Callable[[Request], Awaitable[Response]]:
    settings = Settings(ca_bundle=str(ca_bundle) if ca_bundle else None, resolvers=(parse_resolver(resolver),),
                        http_max_body=MAX_BODY,
                        timeouts=Timeouts(dns=timeout, connect=timeout, tls=timeout, http=timeout))
    ctx = Context(settings=settings, meta=ProbeMeta(probe_id="helper"))

    async def app(request: Request) -> Response:
        if request.method == "GET" and request.path == "/whoami":
            return Response(200, json.dumps({"client": request.peer}).encode(), {"Content-Type": "application/json"})
        if request.method != "POST" or request.path not in ("/check", "/fetch"):
            return Response(404, b'{"error": "POST /check or /fetch, or GET /whoami"}',
                            {"Content-Type": "application/json"})
        try:
            if request.path == "/fetch":
                url, agent = _valid_fetch(json.loads(request.body))
                own = ctx if agent is None else dataclasses.replace(
                    ctx, settings=dataclasses.replace(settings, user_agent=agent))
                result = await asyncio.wait_for(fetch(url, own, allow_bogons=allow_bogons), FETCH_SECONDS)
            else:
                address, port, sni = _valid(json.loads(request.body))
                result = {**await check(address, port, sni, ctx), "client": request.peer}
        except (ValueError, TypeError) as exc:
            return Response(400, json.dumps({"error": str(exc)}).encode(), {"Content-Type": "application/json"})
        except TimeoutError:
            result = {"hops": [], "failure": failures.GENERIC_TIMEOUT}
        return Response(200, json.dumps(result).encode(), {"Content-Type": "application/json"})

    return app
