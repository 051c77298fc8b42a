"""One target's measurement, composed explicitly: DNS → TCP → TLS → HTTP (→ QUIC, throughput).

In the manner of OONI's dslx, each step is a plain call whose inputs are the
previous steps' outputs, so the whole flow reads top to bottom in
:func:`measure_target`. Controls are run only where a step failed and a control
can tell why (a control SNI after a failed handshake, a control Host after a
failed request, the same-network control host after failed connects), so that
a healthy target costs no extra traffic.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import probe.families  # noqa: F401  (registers the families' option schemas)
from probe.analysis.httpdiff import HTTPS_CONTROL
from probe.analysis.verdict import Controls, decide
from probe.checks import control, dns, http, tcp, tls
from probe.core.config import Target
from probe.core.context import Context
from probe.core.privacy import OwnAddresses, scrub_record, scrub_text
from probe.core.records import CheckResult, ProbeMeta, Verdict, check_record, verdict_record

MAX_ADDRESSES = 4  # addresses per target tested with TCP
MAX_TLS_ADDRESSES = 2  # of those, handshakes per TLS port
TLS_PORTS = frozenset({443, 853, 8443})


@dataclass(frozen=True)
class TargetOutcome:
    target: Target
    results: tuple[CheckResult[Any], ...]
    verdict: Verdict
    own: OwnAddresses = OwnAddresses()  # the probe's addresses when the measurement ended

    def records(self, meta: ProbeMeta) -> list[dict[str, Any]]:
        """Check records, then the verdict record, as stored, exported, printed and uploaded.

        The one choke point of privacy: every record leaves through here with the probe's own
        addresses scrubbed (probe.core.privacy; ``test_keys.scrubbed`` counts them).
        """
        t = self.target
        out = [check_record(r, meta, t.service, t.category) for r in self.results]
        out.append(verdict_record(self.verdict, meta))
        return [scrub_record(r, self.own) for r in out]

    def scrub(self, text: str) -> str:
        """``text`` (a verdict's reason for a table, say) with the probe's own addresses scrubbed."""
        return scrub_text(text, self.own)[0]


async def prepare(targets: Sequence[Target]) -> None:
    """Import the optional families the targets use, before measuring starts.

    The throughput family loads scipy (about a second): imported in the middle of a run it
    would stall the event loop, and other targets' timeouts would fire (a false http-failure).
    """
    modules = {"throughput": "probe.checks.throughput", "circumvention": "probe.circumvention.dispatch",
               "diagnostics": "probe.diagnostics.dispatch", "quic": "probe.checks.quic"}
    wanted = {modules[c] for t in targets for c in t.checks if c in modules}
    for module in sorted(wanted):
        await asyncio.to_thread(importlib.import_module, module)


def _ip_version_ok(address: str, ctx: Context) -> bool:
    return ctx.settings.ipv6 or ipaddress.ip_address(address).version == 4


async def _resolve(target: Target, ctx: Context) -> tuple[list[CheckResult[Any]], list[str]]:
    """Lookups through every tested resolver and the control; the addresses to test next."""
    assert target.host is not None
    specs = list(ctx.settings.resolvers)
    control = ctx.settings.control_resolver
    lookups = [dns.resolve(target.host, s, ctx, target=target.name) for s in specs]
    if control is not None:
        lookups.append(dns.resolve(target.host, control, ctx, target=target.name, role="control"))
    results: list[CheckResult[Any]] = list(await asyncio.gather(*lookups))
    # Test the addresses the user's resolver gave; if it failed or lied, the control's,
    # so that TCP/TLS still show whether the service itself is reachable.
    usable = [r for r in results if r.ok and r.role == "target"] or [r for r in results if r.ok]
    addresses = [a for r in usable[:1] for a in r.details.addresses]
    return results, addresses


async def _tls_with_control(
    address: str, port: int, target: Target, ctx: Context
) -> list[CheckResult[Any]]:
    sni = target.server_name
    result = await tls.handshake(address, port, sni, ctx, target=target.name, alpn=target.alpn)
    out: list[CheckResult[Any]] = [result]
    if not result.ok and result.failed_operation == "tls_handshake" and sni is not None:
        control_sni = target.control_sni or ctx.settings.control_sni
        out.append(
            await tls.handshake(address, port, control_sni, ctx, target=target.name,
                                verify=False, alpn=target.alpn, role="control")
        )
    return out


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _http_address(url: str, target: Target, reachable: dict[int, list[str]]) -> str | None:
    """The reachable address to send the request to; None for URLs of other hosts."""
    host = urlsplit(url).hostname
    if host not in (target.host, target.sni) and host not in target.addresses:
        return None
    found = reachable.get(_url_port(url))
    return found[0] if found else None


async def _http_with_control(
    url: str, address: str | None, target: Target, ctx: Context
) -> list[CheckResult[Any]]:
    result = await http.fetch(url, address, ctx, target=target.name)
    out: list[CheckResult[Any]] = [result]
    if not result.ok and result.failed_operation == "http_round_trip" and address is not None:
        parts = urlsplit(url)
        control_host = target.control_sni or ctx.settings.control_sni
        port = f":{parts.port}" if parts.port else ""
        control_url = f"{parts.scheme}://{control_host}{port}/"
        out.append(await http.fetch(control_url, address, ctx, target=target.name, role="control",
                                    verify=False))
    return out


async def _page_and_reference(
    url: str, address: str | None, target: Target, ctx: Context
) -> list[CheckResult[Any]]:
    """The page, and what it is compared with (probe/analysis/httpdiff.py): the test helper's fetch of
    the same URL (asked at the same time), else, for plain HTTP, the same URL over verified TLS."""
    helper = ctx.settings.test_helper
    if helper:
        fetched, asked = await asyncio.gather(_http_with_control(url, address, target, ctx),
                                              control.fetch_page(helper, url, ctx, target=target.name))
        group: list[CheckResult[Any]] = [*fetched, asked]
        if asked.ok:
            return group
    else:
        group = list(await _http_with_control(url, address, target, ctx))
    page, parts = group[0], urlsplit(url)
    if page.ok and not page.details.blockpage and parts.scheme == "http" and parts.port is None and address:
        own = await http.fetch("https://" + url.split("://", 1)[1], address, ctx, target=target.name,
                               role="control")
        group.append(replace(own, check=HTTPS_CONTROL))
    return group


async def _control_host_ok(target: Target, ctx: Context) -> tuple[bool | None, list[CheckResult[Any]]]:
    if target.control_host is None:
        return None, []
    address = target.control_host
    try:
        ipaddress.ip_address(address)
    except ValueError:
        lookup = await dns.resolve(address, ctx.settings.resolvers[0], ctx, target=target.name,
                                   role="control")
        if not lookup.ok:
            return False, [lookup]
        address = lookup.details.addresses[0]
    result = await tcp.connect(address, target.ports[0], ctx, target=target.name, role="control")
    return result.ok, [result]


async def measure_target(target: Target, ctx: Context, controls: Controls | None = None) -> TargetOutcome:
    """Measure one target and decide its verdict."""
    controls = controls or Controls()
    start = ctx.clock()
    results: list[CheckResult[Any]] = []

    # 1. DNS (whenever there is a host name to resolve).
    addresses = list(target.addresses)
    if target.host and ("dns" in target.checks or not addresses):
        lookups, resolved = await _resolve(target, ctx)
        results += lookups
        addresses += [a for a in resolved if a not in addresses]
    addresses = [a for a in addresses if _ip_version_ok(a, ctx)][:MAX_ADDRESSES]

    # 2. TCP to every address:port (not for circumvention-only targets: a VPN's port may be UDP).
    circumvention_only = "circumvention" in target.checks and "tcp" not in target.checks
    connects = [] if circumvention_only else await asyncio.gather(
        *(tcp.connect(a, p, ctx, target=target.name) for a in addresses for p in target.ports)
    )
    results += connects
    reachable: dict[int, list[str]] = {}
    for c in connects:
        if c.ok:
            reachable.setdefault(c.details.port, []).append(c.details.address)

    # 3. TLS, with a control SNI on the same address when the real one fails.
    if "tls" in target.checks:
        https_ports = {_url_port(u) for u in target.urls if u.startswith("https:")}
        tls_ports = [p for p in target.ports if p in TLS_PORTS or p in https_ports]
        for port in tls_ports:
            for group in await asyncio.gather(
                *(_tls_with_control(a, port, target, ctx) for a in reachable.get(port, [])[:MAX_TLS_ADDRESSES])
            ):
                results += group
    tls_ok = any(r.ok for r in results if r.check == "tls")

    # 4. HTTP(S), only where the layers below worked (else they already explain the verdict).
    if "http" in target.checks:
        urls = target.urls or ((f"https://{target.host}/",) if target.host else ())
        for url in urls:
            address = _http_address(url, target, reachable)
            if address is None or (url.startswith("https:") and "tls" in target.checks and not tls_ok):
                continue
            results += await _page_and_reference(url, address, target, ctx)

    # 5. QUIC and throughput (optional families, imported only when used).
    if "quic" in target.checks and addresses:
        from probe.checks import quic

        results.append(await quic.handshake(addresses[0], 443, target.server_name, ctx, target=target.name))
    circumvention_blocked = False
    if "circumvention" in target.checks:
        from probe.circumvention import dispatch

        family = await dispatch.measure(target, ctx, addresses or None)
        results += family
        statuses = {r.details.status for r in family}
        circumvention_blocked = "blocked" in statuses and "answered" not in statuses
    throttling = None
    if "throughput" in target.checks and reachable.get(443):
        from probe.checks import throughput

        t_results, decision = await throughput.throttling_test(target, ctx, reachable[443][0], 443)
        results += t_results
        throttling = decision

    # 6. Remote controls, only when a layer failed everywhere: the test helper (from the far
    #    side of the censor) and the same-network control host.
    control_host_ok = controls.control_host_ok
    remote_tcp_ok = remote_tls_ok = None
    tls_results = [r for r in results if r.check == "tls"]
    all_connects_failed = bool(connects) and not any(c.ok for c in connects)
    all_tls_failed = bool(tls_results) and not any(r.ok for r in tls_results)
    if all_connects_failed or circumvention_blocked:
        control_host_ok, extra = await _control_host_ok(target, ctx)
        results += extra
    if ctx.settings.test_helper and (all_connects_failed or all_tls_failed):
        probe_at = connects[0] if all_connects_failed else tls_results[0]
        asked = await control.ask(ctx.settings.test_helper, probe_at.details.address, probe_at.details.port,
                                  target.server_name, ctx, target=target.name)
        results.append(asked)
        if asked.ok:
            remote_tcp_ok, remote_tls_ok = asked.details.tcp_ok, asked.details.tls_ok
    controls = replace(controls, control_host_ok=control_host_ok, remote_tcp_ok=remote_tcp_ok,
                       remote_tls_ok=remote_tls_ok, throttling=throttling)
    verdict = decide(target, results, controls, start)

    # 7. Raw-packet diagnostics (opt-in, more intrusive): evidence added to the verdict, never deciding it.
    if "diagnostics" in target.checks and addresses:
        from probe.analysis.diagnostics import annotate
        from probe.diagnostics import dispatch as diagnostics

        found = await diagnostics.run(target, ctx, addresses)
        results += found
        verdict = annotate(verdict, found)
    return TargetOutcome(target, tuple(results), verdict, ctx.own.current())


def network_ok(outcomes: Sequence[TargetOutcome]) -> bool | None:
    """Whether the probe's own network works: any control target accessible (None: no controls)."""
    if not outcomes:
        return None
    return any(o.verdict.accessible for o in outcomes)
