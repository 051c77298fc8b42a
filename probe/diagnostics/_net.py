"""Shared plumbing: a scapy sniffer that keeps plain facts, TLS ClientHellos, TTL-limited sends.

Packets are turned into :class:`Seen` (frozen, no scapy types) as they arrive, so the
decisions in localise/rst/verdict are pure functions over plain data. Filtering is done
in Python (``lfilter``), so no libpcap is needed for BPF.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

ICMP_TIME_EXCEEDED = 11


@dataclass(frozen=True)
class Seen:
    """One captured packet of a flow to ``peer``: a TCP segment, or an ICMP error quoting one."""

    time: float
    src: str
    dst: str
    ttl: int
    ip_id: int
    proto: str  # "tcp" or "icmp"
    sport: int  # TCP ports; for ICMP, those of the quoted segment
    dport: int
    flags: str = ""  # TCP flags as scapy writes them ("SA", "R", "RA", "PA", ...)
    window: int = 0
    seq: int = 0
    ack: int = 0
    length: int = 0  # TCP payload bytes
    icmp_type: int = -1
    icmp_code: int = -1


def _to_seen(pkt: Any, peer: str) -> Seen | None:
    from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror

    if IP not in pkt:
        return None
    ip = pkt[IP]
    if ICMP in pkt and IPerror in pkt and TCPerror in pkt:
        inner = pkt[IPerror]
        if inner.dst != peer:
            return None
        return Seen(time.monotonic(), ip.src, ip.dst, ip.ttl, ip.id, "icmp", pkt[TCPerror].sport,
                    pkt[TCPerror].dport, icmp_type=pkt[ICMP].type, icmp_code=pkt[ICMP].code)
    if TCP in pkt and peer in (ip.src, ip.dst):
        tcp = pkt[TCP]
        return Seen(time.monotonic(), ip.src, ip.dst, ip.ttl, ip.id, "tcp", tcp.sport, tcp.dport, str(tcp.flags),
                    tcp.window, tcp.seq, tcp.ack, len(bytes(tcp.payload)))
    return None


class Capture:
    """Sniffs everything to and from ``peer`` (and ICMP errors about it) while in use."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._sniffer: Any = None

    def __enter__(self) -> Capture:
        import scapy.layers.inet
        import scapy.layers.l2  # noqa: F401 - registers Ethernet as the link type the sniffer dissects
        from scapy.config import conf
        from scapy.sendrecv import AsyncSniffer

        iface = conf.route.route(self.peer)[0]
        started = threading.Event()
        self._sniffer = AsyncSniffer(iface=iface, store=False, prn=self._keep, started_callback=started.set)
        self._sniffer.start()
        if not started.wait(5):
            raise OSError("the packet sniffer did not start within 5 s")
        return self

    def _keep(self, pkt: Any) -> None:
        seen = _to_seen(pkt, self.peer)
        if seen is not None:
            with self._lock:
                self._seen.append(seen)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._sniffer.stop(join=True)

    def flow(self, local_port: int, port: int) -> list[Seen]:
        """Packets of one TCP flow (either direction), and ICMP errors quoting it."""
        with self._lock:
            return [s for s in self._seen if {s.sport, s.dport} == {local_port, port}
                    and (s.proto == "icmp" or self.peer in (s.src, s.dst))]


def client_hello(sni: str) -> bytes:
    """The ClientHello Python's own TLS stack would send for ``sni`` (a real one, not a template)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def http_request(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: probe-diagnostics\r\nConnection: close\r\n\r\n".encode()


@contextlib.contextmanager
def tcp(address: str, port: int, timeout: float) -> Iterator[socket.socket]:
    """A kernel TCP connection, closed with an RST at full TTL (so the server forgets it at once)."""
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        yield sock
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
