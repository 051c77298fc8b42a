"""Everything that runs in the lab's server namespace, as one asyncio process.

- an authoritative DNS server for the ``.test`` zone (UDP and TCP, 198.18.10.53);
- a DoH control resolver (198.18.10.54, RFC 8484 POST), answering from the same zone;
- HTTPS (443) and HTTP (80) on every host address, virtual hosts by SNI/Host, with
  ``/`` (a page), ``/large`` (a streamed object for throughput), ``/s/<channel>``
  (channel pages), ``/upload`` (a sink), ``/myip`` and ``/myip/redirect`` (pages that echo the
  client's address everywhere a real site might, for the privacy tests: see :func:`echo_client`);
- QUIC (aioquic) on UDP 443 of the service hosts;
- the test helper (198.18.30.20), which repeats a connect/handshake from this side
  of the censor (see probe/service/helper.py).

Benign conditions are switched at run time through ``behaviour.json`` in the state
directory (``slow``: host → seconds of delay; ``expired``: hosts that serve an
expired certificate; ``views``: host → how its pages differ between the probe's
client and everyone else, see :func:`view`), re-read when it changes.

Run: ``python -m probe.lab.servers STATE_DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from probe.lab.live import LiveJSON
from probe.lab.topology import AUTH_DNS, CLIENT_ADDR, DOH, HELPER, HOSTS
from probe.service.httpd import Request, Response, connection_handler, page

LARGE = 64 * 1024 * 1024  # /large is capped by the client's byte budget, not by this
CHUNK = 16 * 1024




def zone_answer(wire: bytes) -> bytes:
    """The authoritative answer for the lab zone (both the plain server and DoH use it)."""
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    response.flags |= 0x0400  # AA
    question = query.question[0]
    name = question.name.to_text().rstrip(".").lower()
    if name not in HOSTS:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", HOSTS[name].address))
    return response.to_wire()


AUTH_DELAY = 0.08
"""The authoritative server answers this late, as a distant one would: an on-path injector at any hop
(dns_inject) wins the race, and the real answer still arrives, later. DoH answers at once."""


class _DNSUDP(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):  # malformed queries are dropped
            reply = zone_answer(data)
            asyncio.get_running_loop().call_later(AUTH_DELAY, self.transport.sendto, reply, addr)


async def _dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
        reply = zone_answer(await reader.readexactly(size))
        await asyncio.sleep(AUTH_DELAY)
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
    except Exception:  # noqa: BLE001, S110
        pass
    writer.close()


async def _stream(total: int) -> AsyncIterator[bytes]:
    chunk = b"\x5a" * CHUNK
    sent = 0
    while sent < total:
        piece = chunk[: min(CHUNK, total - sent)]
        sent += len(piece)
        yield piece


def article(host: str, lang: str = "en") -> bytes:
    """A site's page with some structure, in English or German (the same template)."""
    words = {"en": ("News", "Front page", "Today's top stories", "Read more"),
             "de": ("Nachrichten", "Startseite", "Die wichtigsten Meldungen", "Weiterlesen")}[lang]
    items = "".join(f"<li><a href='/a/{i}'>{words[2]} {i}</a> <em>{words[3]}</em></li>" for i in range(12))
    return (f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>{host}: {words[0]} - "
            f"{words[1]}</title></head><body><header><nav><a href='/'>{words[1]}</a></nav></header><main>"
            f"<h1>{words[2]}</h1><ul>{items}</ul></main><footer><p>{host}</p></footer></body></html>").encode()


WITHHELD = ("<!doctype html><html><head><title>Channel unavailable</title></head><body><div class='error'>"
            "<p>This channel can't be displayed in your country because it violated local laws.</p></div>"
            "</body></html>")
CHALLENGE = ("<!doctype html><html><head><title>Just a moment...</title></head><body><noscript>Enable JavaScript "
             "and cookies to continue</noscript><script>setTimeout(function(){location.reload()},4000)</script>"
             "</body></html>")


def view(kind: str, host: str, client: bool) -> Response | None:
    """How a host answers when its pages differ by who asks (``client``: the probe's address).

    ``legal451``/``withheld``: the client gets a 451 / a "cannot be displayed in your country" page,
    everyone else (the test helper) the real one. ``language``: German for the client, English for
    the rest. ``georedirect``: the client is sent to ``de.<host>``. ``dynamic``: every answer carries
    a timestamp, a random id and random padding. ``challenge``: everyone gets a CDN challenge (503).
    ``forbidden``: everyone gets a 403 (an origin that refuses non-browsers).
    """
    import os
    import time

    if kind == "legal451" and client:
        return Response(451, page("Unavailable For Legal Reasons", "blocked by a legal demand in your country"))
    if kind == "withheld" and client:
        return Response(200, WITHHELD.encode())
    if kind == "language":
        return Response(200, article(host, "de" if client else "en"), {"Content-Language": "de" if client else "en"})
    if kind == "georedirect" and client:
        return Response(302, b"", {"Location": f"http://de.{host}/"})
    if kind == "dynamic":
        noise = f"<p>generated {time.time_ns()} request {os.urandom(8).hex()}</p>" * (1 + os.urandom(1)[0] % 6)
        return Response(200, article(host).replace(b"</main>", noise.encode() + b"</main>"))
    if kind == "challenge":
        return Response(503, CHALLENGE.encode(), {"X-Challenge": "1", "Cache-Control": "no-store"})
    if kind == "forbidden":
        return Response(403, page("403 Forbidden", "This page is only available in a browser."))
    return None


def echo_client(host: str, client: str, redirect: bool) -> Response:
    """A page that tells the client its address, in every place real sites do: ``X-Client-IP``,
    ``X-Forwarded-For``, a cookie, the title and body, and (``/myip/redirect``) a ``Location``."""
    headers = {"X-Client-IP": client, "X-Forwarded-For": f"{client}, 198.18.30.30",
               "Set-Cookie": f"visitor={client}; Path=/"}
    if redirect:
        headers["Location"] = f"http://{host}/welcome?from={client}"
    return Response(302 if redirect else 200, page(f"Your IP address is {client}", f"Hello {client}"), headers)


def make_site(behaviour: LiveJSON, address: str) -> Any:
    names = {h.address: h.name for h in HOSTS.values()}

    async def site(request: Request) -> Response:
        host = (request.headers.get("host", "").split(":")[0] or request.sni or names.get(address, "")).lower()
        delay = behaviour.current().get("slow", {}).get(host) or behaviour.current().get("slow", {}).get(address)
        if delay:
            await asyncio.sleep(float(delay))
        path = request.path.split("?")[0]
        kind = behaviour.current().get("views", {}).get(host)
        answer = view(kind, host, request.peer == CLIENT_ADDR) if kind and path not in ("/large", "/upload") else None
        if answer is not None:
            return answer
        if path == "/large":
            query = request.path.partition("?")[2]
            size = int(query.split("=")[1]) if query.startswith("bytes=") else LARGE
            return Response(200, _stream(size), {"Content-Type": "application/octet-stream"}, length=size)
        if path in ("/myip", "/myip/redirect"):
            return echo_client(host, request.peer or "", redirect=path.endswith("redirect"))
        if path == "/upload":
            return Response(200, f"received {len(request.body)} bytes".encode(), {"Content-Type": "text/plain"})
        if path.startswith("/s/"):
            return Response(200, page(f"channel {path[3:]}", f"posts of {path[3:]} on {host}"))
        if path == "/":
            return Response(200, page(f"{host} lab", f"served from {address}"))
        return Response(404, page("not found", path))

    return site


def tls_contexts(state: Path, behaviour: LiveJSON) -> ssl.SSLContext:
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    good.load_cert_chain(str(state / "server.pem"))
    expired = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    expired.load_cert_chain(str(state / "expired.pem"))

    def pick(sslobj: Any, name: str | None, _: ssl.SSLContext) -> None:
        sslobj.lab_sni = name
        if name and name in behaviour.current().get("expired", []):
            sslobj.context = expired

    good.sni_callback = pick
    return good


async def doh_app(request: Request) -> Response:
    if request.method != "POST" or not request.body:
        return Response(400, b"POST application/dns-message")
    return Response(200, zone_answer(request.body), {"Content-Type": "application/dns-message"})


async def start_quic(state: Path, address: str) -> Any:
    from aioquic.asyncio.server import serve
    from aioquic.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    configuration.load_cert_chain(str(state / "server.pem"))
    return await serve(address, 443, configuration=configuration)


async def main(state: Path) -> None:
    loop = asyncio.get_running_loop()
    behaviour = LiveJSON(state / "behaviour.json", {"slow": {}, "expired": []})
    context = tls_contexts(state, behaviour)
    servers: list[Any] = []
    await loop.create_datagram_endpoint(_DNSUDP, local_addr=(AUTH_DNS, 53))
    servers.append(await asyncio.start_server(_dns_tcp, AUTH_DNS, 53))
    servers.append(await asyncio.start_server(connection_handler(doh_app), DOH, 443, ssl=context))
    from probe.service.helper import handle as helper_handle

    helper = helper_handle(state / "ca.pem", resolver=f"udp://{AUTH_DNS}")
    servers.append(await asyncio.start_server(connection_handler(helper), HELPER, 443, ssl=context))
    for h in HOSTS.values():
        if h.role == "infra":
            continue
        site = connection_handler(make_site(behaviour, h.address))
        servers.append(await asyncio.start_server(site, h.address, 443, ssl=context, backlog=1024))
        servers.append(await asyncio.start_server(site, h.address, 80, backlog=1024))
        if h.role == "service":
            await start_quic(state, h.address)
    (state / "servers.ready").write_text("ok")
    print("lab servers ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
