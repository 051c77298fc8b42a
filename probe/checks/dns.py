"""DNS check: A and AAAA through one resolver, with rcode, TTLs, timings and bogons.

One code path for every transport: build a query, exchange it (UDP with TCP
fallback on truncation, TCP, DoT or DoH), then interpret the response. The
"system" resolver is the first nameserver of /etc/resolv.conf, queried the same
way, so that its rcode and TTLs are visible (getaddrinfo hides them).

DoH (RFC 8484) is a POST of the wire-format query over the httpx we already
depend on: dnspython's own DoH client needs its ``doh`` extra, which pulls in a
second HTTP stack for a dozen lines of work.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import httpx

from probe.core import failures
from probe.core.config import ResolverSpec, is_ip
from probe.core.context import Context
from probe.core.records import CheckResult, Role

QTYPES = ("A", "AAAA")
UDP_ATTEMPTS = 3


@dataclass(frozen=True)
class DNSAnswer:
    qtype: str
    value: str
    ttl: int


@dataclass(frozen=True)
class DNSDetails:
    query: str
    resolver: str
    resolver_scheme: str
    resolver_address: str | None
    rcode: str | None
    answers: tuple[DNSAnswer, ...]
    addresses: tuple[str, ...]
    bogons: tuple[str, ...]
    outcomes: dict[str, str]  # qtype -> "ok" or a failure string


_BOGON_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32",
        "fc00::/7", "fe80::/10", "ff00::/8",
    )
)


def is_bogon(address: str) -> bool:
    """True for addresses no public service has: 0.0.0.0, private, loopback, link-local, ...

    198.18.0.0/15 (benchmarking) is deliberately not listed: the lab lives there.
    """
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in _BOGON_NETS)


def system_nameserver() -> str:
    """The first nameserver the system is configured with."""
    resolver = dns.resolver.Resolver(configure=True)
    if not resolver.nameservers:
        raise failures.ProbeError(failures.DNS_SERVFAIL, "resolve", "no system nameserver")
    return str(resolver.nameservers[0])


async def _doh(query: dns.message.Message, spec: ResolverSpec, ctx: Context, timeout: float) -> dns.message.Message:
    url = f"https://{_bracket(spec.host)}:{spec.port}{spec.path}"
    async with httpx.AsyncClient(
        verify=ctx.ssl_context(), timeout=timeout, transport=ctx.http_transport, trust_env=False
    ) as client:
        response = await client.post(
            url,
            content=query.to_wire(),
            headers={"content-type": "application/dns-message", "accept": "application/dns-message"},
        )
    if response.status_code != 200:
        raise failures.ProbeError(failures.DNS_SERVFAIL, "resolve", f"DoH HTTP {response.status_code}")
    return dns.message.from_wire(response.content)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def exchange(
    query: dns.message.Message, spec: ResolverSpec, ctx: Context, timeout: float
) -> dns.message.Message:
    """Send one query over the resolver's transport and return the response."""
    if spec.scheme == "https":
        return await _doh(query, spec, ctx, timeout)
    where = system_nameserver() if spec.scheme == "system" else spec.host
    port = 53 if spec.scheme == "system" else spec.port
    if spec.scheme in ("udp", "system"):
        # UDP loses packets on ordinary lossy links: retransmit like stub resolvers do, so that
        # 1-5% loss does not read as DNS blocking.
        for attempt in range(UDP_ATTEMPTS):
            try:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    query, where, timeout=timeout / UDP_ATTEMPTS, port=port
                )
                return response
            except dns.exception.Timeout:
                if attempt == UDP_ATTEMPTS - 1:
                    raise
    if spec.scheme == "tcp":
        return await dns.asyncquery.tcp(query, where, timeout=timeout, port=port)
    return await dns.asyncquery.tls(
        query, where, timeout=timeout, port=port, ssl_context=ctx.ssl_context(), server_hostname=spec.host
        if not is_ip(spec.host) else None,
    )


def _interpret(response: dns.message.Message, qtype: str) -> tuple[str, list[DNSAnswer]]:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return failures.DNS_NXDOMAIN, []
    if rcode == dns.rcode.SERVFAIL:
        return failures.DNS_SERVFAIL, []
    if rcode == dns.rcode.REFUSED:
        return failures.DNS_REFUSED, []
    if rcode != dns.rcode.NOERROR:
        return failures.DNS_SERVFAIL, []
    wanted = dns.rdatatype.from_text(qtype)
    answers = [
        DNSAnswer(qtype, rdata.to_text(), rrset.ttl)
        for rrset in response.answer
        if rrset.rdtype == wanted
        for rdata in rrset
    ]
    return ("ok" if answers else failures.DNS_NO_ANSWER), answers


async def resolve(
    domain: str,
    spec: ResolverSpec,
    ctx: Context,
    *,
    target: str,
    role: Role = "target",
    qtypes: tuple[str, ...] = QTYPES,
) -> CheckResult[DNSDetails]:
    """Resolve ``domain`` through ``spec``; the result fails on NXDOMAIN, SERVFAIL, bogons, ..."""
    timeout = ctx.settings.timeouts.dns
    start, t0 = ctx.clock(), ctx.monotonic()
    timings: dict[str, float] = {}
    outcomes: dict[str, str] = {}
    answers: list[DNSAnswer] = []
    rcode: str | None = None

    async def one(qtype: str) -> None:
        nonlocal rcode
        q0 = ctx.monotonic()
        try:
            query = dns.message.make_query(domain, qtype)
            response = await asyncio.wait_for(exchange(query, spec, ctx, timeout), timeout)
            outcome, found = _interpret(response, qtype)
            if qtype == "A" or rcode is None:
                rcode = dns.rcode.to_text(response.rcode())
            answers.extend(found)
            outcomes[qtype] = outcome
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failure string
            outcomes[qtype] = failures.classify(exc)
        timings[f"resolve_{qtype.lower()}"] = ctx.monotonic() - q0

    await asyncio.gather(*(one(q) for q in qtypes))
    addresses = tuple(dict.fromkeys(a.value for a in answers if a.qtype in ("A", "AAAA")))
    bogons = tuple(a for a in addresses if is_bogon(a))
    failure = _overall_failure(outcomes, addresses, bogons)
    details = DNSDetails(
        query=domain,
        resolver=spec.label,
        resolver_scheme=spec.scheme,
        resolver_address=spec.host or None,
        rcode=rcode,
        answers=tuple(answers),
        addresses=addresses,
        bogons=bogons,
        outcomes=dict(sorted(outcomes.items())),
    )
    return CheckResult(
        check="dns",
        target=target,
        input=f"{domain}@{spec.label}",
        ok=failure is None,
        failure=failure,
        failed_operation=None if failure is None else "resolve",
        start_time=start,
        runtime=ctx.monotonic() - t0,
        details=details,
        role=role,
        timings=timings,
    )


def _overall_failure(outcomes: dict[str, str], addresses: tuple[str, ...], bogons: tuple[str, ...]) -> str | None:
    """One failure for the lookup: bogons first, then the A outcome, then any outcome."""
    if bogons:
        return failures.DNS_BOGON
    if addresses:
        return None
    a_outcome = outcomes.get("A")
    if a_outcome and a_outcome != "ok":
        return a_outcome
    others = [o for o in outcomes.values() if o != "ok"]
    return others[0] if others else failures.DNS_NO_ANSWER
