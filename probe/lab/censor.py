"""Processes that run in the censor's namespace: the ISP resolver, block-page and
interception servers, an on-path DNS injector and an NFQUEUE latency relay.

Run: ``python -m probe.lab.censor KIND STATE_DIR [ARGS...]`` (the lab starts them).
Rules they follow at run time live in ``STATE_DIR/rules.json`` and are re-read
when the file changes, so techniques switch without restarting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from probe.lab.live import LiveJSON
from probe.lab.topology import AUTH_DNS, ISP_RESOLVER
from probe.service.httpd import Request, Response, connection_handler, page

BLOCKPAGE_PORT, REDIRECT_PORT, MITM_PORT, UNKNOWN_PORT = 8080, 8081, 8443, 8082
BLOCKPAGE = (
    "<html><head><title>Доступ ограничен</title></head><body><h1>Доступ к ресурсу ограничен</h1>"
    "<p>Доступ к информационному ресурсу ограничен на основании Федерального закона. "
    "Реестр: https://eais.rkn.gov.ru/</p></body></html>"
)




#: Block pages that no fingerprint in probe/data/blockpages.yaml knows, in several languages and shapes
#: (tests/lab/test_blockpages_lab.py checks that none matches): style -> (status, headers, body).
UNKNOWN_BLOCKPAGES: dict[str, tuple[int, dict[str, str], str]] = {
    "en": (200, {}, "<html><head><title>Access denied</title></head><body><h2>Access denied</h2><p>Access to "
                    "this website has been denied by your Internet service provider in accordance with a court "
                    "order.</p><p>Case number 2-1234/2026.</p></body></html>"),
    "fa": (200, {}, "<html dir='rtl'><head><meta charset='utf-8'><title>دسترسی غیرمجاز</title></head><body>"
                    "<iframe src='http://filter.isp-portal.test/' width='100%' height='100%'></iframe></body></html>"),
    "zh": (200, {}, "<html><head><meta charset='utf-8'><title>网站无法访问</title></head><body><div><p>根据相关"
                    "法律法规和政策，该网站暂时无法访问。</p></div></body></html>"),
    "tr": (200, {"X-Filter": "ok"}, "<html><body><center><b>Erişim engellendi.</b> Bu siteye erişim mahkeme "
                                    "kararı ile engellenmiştir.</center></body></html>"),
    "es": (403, {"Server": "filter"}, "<html><head><title>Acceso denegado</title></head><body><h1>Acceso "
                                      "denegado</h1><p>Este sitio ha sido bloqueado por su proveedor.</p></body>"
                                      "</html>"),
    "redirect": (302, {"Location": "http://warning.isp-portal.test/blocked?site={host}"}, ""),
}


# -- the ISP resolver (lies when told to) -------------------------------------------------


async def resolve_as_isp(wire: bytes, rules: LiveJSON) -> bytes:
    query = dns.message.from_wire(wire)
    name = query.question[0].name.to_text().rstrip(".").lower()
    current = rules.current()
    if name in current.get("dns_nxdomain", []):
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    forged = current.get("dns_bogon", {}).get(name)
    if forged:
        response = dns.message.make_response(query)
        if query.question[0].rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A", forged))
        return response.to_wire()
    answer = await asyncio.get_running_loop().run_in_executor(
        None, lambda: dns.query.udp(query, AUTH_DNS, timeout=2)
    )
    return answer.to_wire()


class _ISPUDP(asyncio.DatagramProtocol):
    def __init__(self, rules: LiveJSON) -> None:
        self.rules = rules

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        async def answer() -> None:
            with contextlib.suppress(Exception):  # an unanswered query times out, as it would
                self.transport.sendto(await resolve_as_isp(data, self.rules), addr)

        asyncio.ensure_future(answer())


async def isp_resolver(state: Path) -> None:
    rules = LiveJSON(state / "rules.json")
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _ISPUDP(rules), local_addr=(ISP_RESOLVER, 53))

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
            reply = await resolve_as_isp(await reader.readexactly(size), rules)
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        except Exception:  # noqa: BLE001, S110
            pass
        writer.close()

    await asyncio.start_server(tcp, ISP_RESOLVER, 53)
    await asyncio.Event().wait()


# -- block pages and interception -----------------------------------------------------------


async def blockpages(state: Path) -> None:
    rules = LiveJSON(state / "rules.json")

    async def inject(request: Request) -> Response:
        return Response(200, BLOCKPAGE.encode())

    async def unknown(request: Request) -> Response:
        host = request.headers.get("host", "").split(":")[0].lower()
        style = rules.current().get("blockpage_style", {}).get(host, "en")
        status, headers, body = UNKNOWN_BLOCKPAGES[style]
        return Response(status, body.encode(), {k: v.replace("{host}", host) for k, v in headers.items()})

    async def redirect(request: Request) -> Response:
        return Response(302, b"", {"Location": "http://warning.rt.ru/?id=17&url=" + request.headers.get("host", "")})

    async def intercepted(request: Request) -> Response:
        return Response(200, page("intercepted", "this page was served by an interception proxy"))

    mitm = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    mitm.load_cert_chain(str(state / "mitm.pem"))
    await asyncio.start_server(connection_handler(inject), "0.0.0.0", BLOCKPAGE_PORT)  # noqa: S104 - lab ns only
    await asyncio.start_server(connection_handler(redirect), "0.0.0.0", REDIRECT_PORT)  # noqa: S104
    await asyncio.start_server(connection_handler(unknown), "0.0.0.0", UNKNOWN_PORT)  # noqa: S104
    await asyncio.start_server(connection_handler(intercepted), "0.0.0.0", MITM_PORT, ssl=mitm)  # noqa: S104
    await asyncio.Event().wait()


# -- on-path DNS injection (scapy) ----------------------------------------------------------


HOLD_MAX = 3.0  # seconds a real answer is held at most, if its query's forgery never went out


def dns_injector(state: Path, iface: str, name: str, answer: str, queue: int) -> None:
    """Answer queries for ``name`` seen on ``iface`` with ``answer``; hold the real answer until then.

    At hop 1 it sees the client's query to the ISP resolver; further on, the resolver's own query
    to the authoritative server (which answers AUTH_DELAY late, like a distant one). The real answer
    for ``name`` comes to NFQUEUE ``queue`` (rules: ``dns_inject`` in probe.lab.techniques) and is
    held until the forged answer to its query (same address, port and DNS id) has been sent, so the
    forgery wins its race whatever the CPU load, as a real on-path injector's does; the real answer
    still arrives, later (released at most HOLD_MAX after it came). The capture socket (with a
    kernel BPF filter, so bulk traffic never reaches Python), the sending socket and the queue are
    all open before "ready".
    """
    import threading

    from netfilterqueue import NetfilterQueue
    from scapy.all import DNS, DNSQR, DNSRR, IP, UDP, conf, sniff  # type: ignore[attr-defined]

    wanted = name.rstrip(".").lower() + "."
    listen = conf.L2listen(iface=iface, filter="udp dst port 53")
    out = conf.L3socket()
    loop = asyncio.new_event_loop()
    forged: set[tuple[str, int, int]] = set()  # (resolver address, port, DNS id); loop thread only
    held: dict[tuple[str, int, int], list[Any]] = {}

    def is_query(pkt: Any) -> bool:
        return bool(pkt.haslayer(DNSQR) and pkt[DNS].qr == 0 and pkt[UDP].dport == 53
                    and pkt[DNSQR].qname.decode().lower() == wanted)

    def release(key: tuple[str, int, int]) -> None:
        forged.add(key)
        for pkt in held.pop(key, []):
            pkt.accept()

    def forge(pkt: Any) -> None:  # the sniffing thread
        qtype = pkt[DNSQR].qtype
        reply = (IP(src=pkt[IP].dst, dst=pkt[IP].src)
                 / UDP(sport=53, dport=pkt[UDP].sport)
                 / DNS(id=pkt[DNS].id, qr=1, aa=1, rd=pkt[DNS].rd, ra=1, qd=pkt[DNS].qd,
                       an=DNSRR(rrname=wanted, type="A", ttl=300, rdata=answer) if qtype == 1 else None))
        out.send(reply)
        loop.call_soon_threadsafe(release, (pkt[IP].src, pkt[UDP].sport, pkt[DNS].id))

    def is_forgery(ip: Any) -> bool:
        return any(getattr(ip[DNS].an[i], "rdata", None) == answer for i in range(ip[DNS].ancount or 0))

    def on_answer(pkt: Any) -> None:  # the loop thread: an answer for the name, from a resolver
        ip = IP(pkt.get_payload())
        if not ip.haslayer(DNS):
            pkt.accept()
            return
        key = (ip[IP].dst, ip[UDP].dport, ip[DNS].id)
        if key in forged or is_forgery(ip):
            pkt.accept()
            return
        held.setdefault(key, []).append(pkt)
        loop.call_later(HOLD_MAX, give_up, key, pkt)

    def give_up(key: tuple[str, int, int], pkt: Any) -> None:
        if pkt in held.get(key, ()):
            held[key].remove(pkt)
            pkt.accept()

    nfq = NetfilterQueue()
    nfq.bind(queue, on_answer, max_len=1024)
    loop.add_reader(nfq.get_fd(), lambda: nfq.run(block=False))
    warm = IP(dst="198.18.0.2") / UDP(sport=1, dport=53) / DNS(rd=1, qd=DNSQR(qname=wanted))
    forge_bytes = bytes(IP(bytes(warm)))  # the first dissect/build loads scapy's layers: not during a race
    del forge_bytes
    threading.Thread(target=sniff, kwargs={"opened_socket": listen, "store": False, "lfilter": is_query,
                                           "prn": forge}, daemon=True).start()
    (state / f"injector-{name}.ready").write_text("ok")
    loop.run_forever()


# -- NFQUEUE latency relay ------------------------------------------------------------------


def delay_relay(state: Path, queue: int, ms: float, jitter_ms: float) -> None:
    """Hold every queued packet ms ± jitter_ms before accepting it (netem is not on this kernel)."""
    from netfilterqueue import NetfilterQueue

    loop = asyncio.new_event_loop()
    nfq = NetfilterQueue()

    def on_packet(pkt: Any) -> None:
        delay = max(0.0, (ms + random.uniform(-jitter_ms, jitter_ms)) / 1000)  # noqa: S311 - not crypto
        loop.call_later(delay, pkt.accept)

    nfq.bind(queue, on_packet, max_len=4096)
    loop.add_reader(nfq.get_fd(), lambda: nfq.run(block=False))
    (state / f"delay-{queue}.ready").write_text("ok")
    loop.run_forever()


def main(argv: list[str]) -> None:
    kind, state = argv[0], Path(argv[1])
    if kind == "resolver":
        asyncio.run(isp_resolver(state))
    elif kind == "blockpages":
        asyncio.run(blockpages(state))
    elif kind == "inject":
        dns_injector(state, argv[2], argv[3], argv[4], int(argv[5]))
    elif kind == "delay":
        delay_relay(state, int(argv[2]), float(argv[3]), float(argv[4]))
    else:
        raise SystemExit(f"unknown censor process {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
