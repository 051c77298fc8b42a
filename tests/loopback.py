"""Small real servers on 127.0.0.1 for the integration tests (never any other address).

- :class:`DNSServer`: UDP+TCP, answers by query name: ``ok.test`` (198.18.1.10),
  ``nx.test`` (NXDOMAIN), ``bogon.test`` (10.0.0.1), ``zero.test`` (0.0.0.0),
  ``servfail.test``, ``refused.test``, ``silent.test`` (no answer at all),
  ``big.test`` (truncated over UDP, full over TCP), ``v6only.test`` (AAAA only).
- :class:`TLSServer`: one behaviour per server: ``http`` (an HTTP/1.1 responder with
  routes), ``rst`` (reset after the ClientHello), ``eof`` (close after the ClientHello),
  ``silent`` (accept and never answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# -- DNS ------------------------------------------------------------------------------

ANSWERS = {"ok.test.": "198.18.1.10", "bogon.test.": "10.0.0.1", "zero.test.": "0.0.0.0"}
BIG_COUNT = 60


def dns_response(wire: bytes, tcp: bool) -> bytes | None:
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    name, rdtype = question.name.to_text().lower(), question.rdtype
    if name == "silent.test.":
        return None
    if name == "nx.test.":
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif name == "servfail.test.":
        response.set_rcode(dns.rcode.SERVFAIL)
    elif name == "refused.test.":
        response.set_rcode(dns.rcode.REFUSED)
    elif name == "big.test." and rdtype == dns.rdatatype.A:
        if not tcp:
            response.flags |= dns.flags.TC
        else:
            addresses = [f"198.18.2.{i}" for i in range(1, BIG_COUNT + 1)]
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "A", addresses))
    elif name == "v6only.test." and rdtype == dns.rdatatype.AAAA:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "AAAA", "2001:67c:4e8:f004::a"))
    elif name in ANSWERS and rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", ANSWERS[name]))
    return response.to_wire()


class _UDP(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = dns_response(data, tcp=False)
        if reply is not None:
            self.transport.sendto(reply, addr)


class DNSServer:
    """UDP and TCP on the same 127.0.0.1 port."""

    async def __aenter__(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        self.tcp = await asyncio.start_server(self._tcp, "127.0.0.1", 0)
        self.port = self.tcp.sockets[0].getsockname()[1]
        self.udp, _ = await loop.create_datagram_endpoint(_UDP, local_addr=("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = dns_response(await reader.readexactly(size), tcp=True)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
            else:
                await asyncio.sleep(30)
        writer.close()


# -- TLS / HTTP ------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BLOCKPAGE = (
    "<html><head><title>Доступ ограничен</title></head><body>Доступ к ресурсу ограничен "
    "на основании решения. См. eais.rkn.gov.ru</body></html>"
)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> str:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head.decode("latin-1").split(" ")[1]


async def http_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Routes: / (200 page), /blockpage, /451, /forbidden (403), /huge (1 GB, streamed),
    /bigheaders (100 KB of headers), /reset (RST after the request), /hang (never answers)."""
    try:
        path = await _read_request(reader)
        body = b"<html><head><title>Hello</title></head><body>ok</body></html>"
        status, headers = "200 OK", ""
        if path == "/blockpage":
            body = BLOCKPAGE.encode()
        elif path == "/451":
            status = "451 Unavailable For Legal Reasons"
        elif path == "/forbidden":
            status = "403 Forbidden"
        elif path == "/reset":
            _reset(writer)
            return
        elif path == "/hang":
            await asyncio.sleep(60)
        elif path == "/bigheaders":
            headers = "".join(f"X-Filler-{i}: {'a' * 1000}\r\n" for i in range(100))
        elif path == "/huge":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            chunk = b"x" * 65536
            for _ in range(16000):  # bounded: at most ~1 GB, stops when the client goes away
                writer.write(chunk)
                await writer.drain()
            return
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: text/html\r\n"
            f"{headers}Connection: close\r\n\r\n".encode() + body
        )
        await writer.drain()
    except Exception:  # noqa: BLE001 - the client went away; nothing to do
        pass
    finally:
        writer.close()


async def _after_client_hello(reader: asyncio.StreamReader) -> None:
    await asyncio.wait_for(reader.read(5), 5)


async def rst_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await _after_client_hello(reader)
    _reset(writer)


async def eof_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await _after_client_hello(reader)
    writer.close()


async def silent_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)
    writer.close()


class Server:
    """A TCP server on 127.0.0.1, optionally TLS; ``handler`` sees the plaintext."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl_context = handler, ssl_context

    async def __aenter__(self) -> Server:
        self.tasks: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await self.handler(reader, writer)
            finally:
                self.tasks.discard(task)

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
