"""DNS injection: ask the resolver and an address that runs no DNS, and keep listening.

An on-path injector answers a query as soon as it sees it, spoofing the destination; the
real answer (if any) comes later. So one query is sent to each address and the socket
stays open for ``diag_dns_wait`` seconds, keeping every answer with its source and IP
TTL (``IP_RECVTTL``). A query is flagged as injected when its answers disagree, when an
answer comes from an address that was not asked, or when anything answers for an address
that runs no DNS server at all.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rdatatype


@dataclass(frozen=True)
class Answer:
    src: str
    port: int
    ip_ttl: int | None
    rcode: str
    addresses: tuple[str, ...]
    after_ms: float


@dataclass(frozen=True)
class Query:
    server: str
    silent: bool  # True: this address runs no DNS server, so any answer is forged
    answers: tuple[Answer, ...]
    injected: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DNSInjectionDetails:
    kind: str
    host: str
    skipped: bool
    queries: tuple[Query, ...]
    injected: bool
    forged_addresses: tuple[str, ...]


def judge(server: str, silent: bool, answers: Sequence[Answer]) -> tuple[bool, tuple[str, ...]]:
    """Pure: is this set of answers to one query the mark of an injector?"""
    reasons: list[str] = []
    if silent and answers:
        reasons.append(f"{len(answers)} answer(s) from {server}, which runs no DNS server")
    strangers = sorted({a.src for a in answers if a.src != server})
    if strangers:
        reasons.append(f"answers from {', '.join(strangers)}, which was not asked")
    sets = {(a.rcode, a.addresses) for a in answers}
    if len(sets) > 1:
        reasons.append("conflicting answers: " + "; ".join(f"{r} {list(a)}" for r, a in sorted(sets)))
    ttls = sorted({a.ip_ttl for a in answers if a.ip_ttl is not None})
    if len(ttls) > 1 and reasons:
        reasons.append(f"answers arrived with different IP TTLs {ttls}: sent from different distances")
    return bool(reasons), tuple(reasons)


def forged(queries: Sequence[Query]) -> tuple[str, ...]:
    """Addresses only an injector gave: those in answers to silent addresses, or first of a conflict."""
    out: set[str] = set()
    for q in queries:
        if q.silent:
            out.update(a for ans in q.answers for a in ans.addresses)
        elif q.injected and len(q.answers) > 1:
            out.update(q.answers[0].addresses)
    return tuple(sorted(out))


def ask(host: str, server: str, wait: float, port: int = 53) -> tuple[Answer, ...]:
    """One A query to ``server``; every answer that arrives within ``wait`` seconds."""
    query = dns.message.make_query(host, "A")
    query.id = int.from_bytes(os.urandom(2), "big")
    answers: list[Answer] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)  # Linux: 12
        sock.setblocking(False)
        start = time.monotonic()
        sock.sendto(query.to_wire(), (server, port))
        while (left := start + wait - time.monotonic()) > 0 and len(answers) < 16:
            if not select.select([sock], [], [], left)[0]:
                break
            try:
                data, ancillary, _, (src, sport) = sock.recvmsg(4096, socket.CMSG_SPACE(4))
            except OSError:
                continue  # an ICMP error reported on the socket
            try:
                reply = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - garbage is not an answer
                continue
            if reply.id != query.id:
                continue
            ip_ttl = next((struct.unpack("i", d[:4])[0] for lvl, kind, d in ancillary
                           if lvl == socket.IPPROTO_IP and kind == socket.IP_TTL), None)
            found = tuple(sorted(r.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
                                 for r in rrset))
            answers.append(Answer(src, sport, ip_ttl, dns.rcode.to_text(reply.rcode()), found,
                                  round((time.monotonic() - start) * 1000, 2)))
    return tuple(answers)


def run_dns(host: str, resolvers: Sequence[str], silent: Sequence[str], wait: float) -> DNSInjectionDetails:
    queries = []
    for server, is_silent in [*((r, False) for r in resolvers), *((s, True) for s in silent)]:
        answers = ask(host, server, wait)
        injected, reasons = judge(server, is_silent, answers)
        queries.append(Query(server, is_silent, answers, injected, reasons))
    return DNSInjectionDetails("dns_injection", host, False, tuple(queries), any(q.injected for q in queries),
                               forged(queries))
