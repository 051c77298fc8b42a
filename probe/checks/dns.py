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
import socket
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import httpx

from probe.checks.body import ACCEPT_ENCODING, read_capped, send_streamed
from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.config import ResolverSpec, is_ip
from probe.core.context import Context
from probe.core.records import CheckResult, Role

QTYPES = ("A", "AAAA")
UDP_ATTEMPTS = 3
STRAYS_PARSED = 16
MAX_MESSAGE = 65535


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
    stray_answers: int = 0  # UDP datagrams that were not the answer: an injection signal
    stray_sources: tuple[str, ...] = ()  # where they came from (the resolver's side, not ours)
    stray_addresses: tuple[str, ...] = ()  # A/AAAA values they carried


@dataclass
class Strays:
    """Datagrams a lookup ignored: wrong source address or port, wrong id or question, or garbage.

    A stub resolver keeps waiting for the real answer; an off-path injector's forged
    answer usually arrives first, so their count and content are evidence. At most
    :data:`STRAYS_PARSED` are parsed, so that a flood costs only a counter.
    """

    count: int = 0
    sources: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    def note(self, wire: bytes, source: tuple[str, int]) -> None:
        self.count += 1
        if self.count > STRAYS_PARSED:
            return
        if (where := endpoint(source[0], source[1])) not in self.sources:
            self.sources.append(where)
        try:
            message = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - garbage is counted, not parsed
            return
        for rrset in message.answer:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                self.addresses.extend(r.to_text() for r in rrset if r.to_text() not in self.addresses)


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
        request = client.build_request(
            "POST",
            url,
            content=query.to_wire(),
            headers={"content-type": "application/dns-message", "accept": "application/dns-message",
                     "accept-encoding": ACCEPT_ENCODING},
        )
        response = await send_streamed(client, request)
        try:
            body = await read_capped(response, MAX_MESSAGE)  # a DNS message is at most 64 KiB
        finally:
            await response.aclose()
    if response.status_code != 200:
        raise failures.ProbeError(failures.DNS_SERVFAIL, "resolve", f"DoH HTTP {response.status_code}")
    return dns.message.from_wire(body.data)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.queue.full():  # a flood beyond the queue is dropped, as a kernel buffer would
            self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier datagram: keep waiting, like a stub resolver


async def _udp(
    query: dns.message.Message, where: str, port: int, timeout: float, strays: Strays
) -> dns.message.Message:
    """One UDP exchange that waits for the answer from ``where:port`` with the query's id and question."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in where else socket.AF_INET
    transport, protocol = await loop.create_datagram_endpoint(_Datagrams, family=family)
    deadline = loop.time() + timeout
    server = ipaddress.ip_address(where.split("%")[0])
    try:
        transport.sendto(query.to_wire(), (where, port))
        while (left := deadline - loop.time()) > 0:
            try:
                wire, source = await asyncio.wait_for(protocol.queue.get(), left)
            except TimeoutError:
                break
            if ipaddress.ip_address(source[0].split("%")[0]) == server and source[1] == port:
                try:
                    reply = dns.message.from_wire(wire)
                except Exception:  # noqa: BLE001 - not an answer; keep waiting
                    reply = None
                if reply is not None and query.is_response(reply):
                    return reply
            strays.note(wire, source)
    finally:
        transport.close()
    raise dns.exception.Timeout(timeout=timeout)  # type: ignore[no-untyped-call]


async def exchange(
    query: dns.message.Message, spec: ResolverSpec, ctx: Context, timeout: float, strays: Strays | None = None
) -> dns.message.Message:
    """Send one query over the resolver's transport and return the response."""
    if spec.scheme == "https":
        return await _doh(query, spec, ctx, timeout)
    where = system_nameserver() if spec.scheme == "system" else spec.host
    port = 53 if spec.scheme == "system" else spec.port
    if spec.scheme in ("udp", "system"):
        # UDP loses packets on ordinary lossy links: retransmit like stub resolvers do, so that
        # 1-5% loss does not read as DNS blocking.
        strays = strays if strays is not None else Strays()
        for attempt in range(UDP_ATTEMPTS):
            try:
                response = await _udp(query, where, port, timeout / UDP_ATTEMPTS, strays)
            except dns.exception.Timeout:
                if attempt == UDP_ATTEMPTS - 1:
                    raise
                continue
            if not response.flags & dns.flags.TC:
                return response
            return await dns.asyncquery.tcp(query, where, timeout=timeout, port=port)
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
    strays = Strays()

    async def one(qtype: str) -> None:
        nonlocal rcode
        q0 = ctx.monotonic()
        try:
            query = dns.message.make_query(domain, qtype)
            response = await asyncio.wait_for(exchange(query, spec, ctx, timeout, strays), timeout)
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
        stray_answers=strays.count,
        stray_sources=tuple(strays.sources),
        stray_addresses=tuple(strays.addresses),
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
