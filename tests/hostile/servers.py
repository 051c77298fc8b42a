"""Hostile servers on 127.0.0.1 (never any other address): pages built to stall a parser or
to blow up memory, replies that break HTTP, and a DNS server whose path injects strays.

:func:`hostile_app` serves one route per attack (``ROUTES``). The bombs are built once
per process from a compressor fed in blocks, so that no test ever holds the inflated size.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from functools import cache

import dns.message
import dns.rrset

from tests.loopback import _read_request, dns_response

BOMB_INFLATED = 128 << 20  # 128 MiB of zeros behind every bomb
_BLOCK = bytes(1 << 20)

#: A page of repeated <title> tags and no closing tag: the regex title parser took seconds on it.
TITLES_PAGE = b"<html><head>" + b"<title>" * 20000 + b"</head></html>"


def _compress(data_blocks: int, wbits: int, block: bytes = _BLOCK) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join(packer.compress(block) for _ in range(data_blocks)) + packer.flush()


@cache
def bomb(kind: str) -> tuple[bytes, str]:
    """(body, Content-Encoding) for a bomb that inflates to :data:`BOMB_INFLATED` bytes."""
    blocks = BOMB_INFLATED >> 20
    if kind == "gzip":
        return _compress(blocks, zlib.MAX_WBITS | 16), "gzip"
    if kind == "deflate":
        return _compress(blocks, zlib.MAX_WBITS), "deflate"
    if kind == "raw-deflate":
        return _compress(blocks, -zlib.MAX_WBITS), "deflate"
    if kind == "gzip-gzip":  # the inner bomb compresses again to a few KiB
        return _gzip(_compress(blocks, zlib.MAX_WBITS | 16)), "gzip, gzip"
    raise ValueError(kind)


@cache
def empty_blocks() -> bytes:
    """``Content-Encoding: deflate, gzip``: a gzip bomb whose 256 MB are empty deflate blocks, so
    that the inner stage outputs nothing while the outer one inflates on."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    empty_stored = b"\x00\x00\x00\xff\xff" * 200_000  # 1 MB of empty, non-final stored blocks
    parts = [packer.compress(b"\x78\x9c")]  # a zlib header
    parts += [packer.compress(empty_stored) for _ in range(256)]
    parts += [packer.compress(b"\x03\x00\x00\x00\x00\x01"), packer.flush()]  # final empty block, adler32
    return b"".join(parts)


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


BOMBS = ("gzip", "deflate", "raw-deflate", "gzip-gzip")

#: Every route of :func:`hostile_app`, with what it sends.
ROUTES = {
    "/titles": "a 140 KB page of repeated <title> tags",
    **{f"/bomb/{kind}": f"a {kind} bomb (128 MiB inflated), with Content-Length" for kind in BOMBS},
    "/bomb/chunked": "the gzip bomb in 4 KiB chunks (Transfer-Encoding: chunked)",
    "/bomb/empty-blocks": "256 MB of empty deflate blocks inside a gzip bomb (deflate, gzip)",
    "/bad-gzip": "Content-Encoding: gzip over bytes that are not gzip",
    "/codings": "ten stacked content codings",
    "/http09": "an HTTP/0.9 reply: a page with no status line, then close",
    "/garbage-status": "a status line that is not HTTP",
    "/bad-chunked": "a chunked body whose chunk size is not hex",
    "/huge-header": "one 100 KB header line",
    "/short-body": "Content-Length: 100000, then 10 bytes and close",
}


async def _send(writer: asyncio.StreamWriter, body: bytes, headers: str = "") -> None:
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: text/html\r\n"
                 f"{headers}Connection: close\r\n\r\n".encode() + body)
    await writer.drain()


async def hostile_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        path = await _read_request(reader)
        if path == "/titles":
            await _send(writer, TITLES_PAGE)
        elif path.startswith("/bomb/") and path[6:] in BOMBS:
            body, coding = bomb(path[6:])
            await _send(writer, body, f"Content-Encoding: {coding}\r\n")
        elif path == "/bomb/empty-blocks":
            await _send(writer, empty_blocks(), "Content-Encoding: deflate, gzip\r\n")
        elif path == "/bomb/chunked":
            body, _ = bomb("gzip")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 4096):
                piece = body[i : i + 4096]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif path == "/bad-gzip":
            await _send(writer, b"this is not gzip at all" * 10, "Content-Encoding: gzip\r\n")
        elif path == "/codings":
            body = b"<title>deep</title>"
            for _ in range(10):
                body = _gzip(body)
            await _send(writer, body, f"Content-Encoding: {', '.join(['gzip'] * 10)}\r\n")
        elif path == "/http09":
            writer.write(b"<html><head><title>old</title></head><body>HTTP/0.9</body></html>\n")
            await writer.drain()
        elif path == "/garbage-status":
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await writer.drain()
        elif path == "/bad-chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
        elif path == "/huge-header":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        elif path == "/short-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
            await writer.drain()
    except Exception:  # noqa: BLE001 - the client went away; nothing to do
        pass
    finally:
        writer.close()


# -- DNS: a stray datagram before the real answer ------------------------------------------

STRAY_ADDRESS = "198.18.9.9"  # what the forged (stray) answer claims


def _forged(query: bytes, *, other_id: bool) -> bytes:
    message = dns.message.from_wire(query)
    forged = dns.message.make_response(message)
    if other_id:
        forged.id = (message.id + 1) & 0xFFFF
    forged.answer.append(dns.rrset.from_text(message.question[0].name, 60, "IN", "A", STRAY_ADDRESS))
    return forged.to_wire()


class StrayDNSServer:
    """UDP on 127.0.0.1: for every query, first a forged answer (from another port, or with
    another transaction id, or a garbage datagram), then, 50 ms later, the real answer."""

    def __init__(self, stray: str) -> None:
        assert stray in ("port", "id", "garbage")
        self.stray = stray

    async def __aenter__(self) -> StrayDNSServer:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close()
        self.other.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, client = await loop.sock_recvfrom(self.sock, 4096)
            if self.stray == "port":
                self.other.sendto(_forged(data, other_id=False), client)
            elif self.stray == "id":
                self.sock.sendto(_forged(data, other_id=True), client)
            else:
                self.sock.sendto(struct.pack("!H", 0xFFFF) + b"\x00garbage", client)
            await asyncio.sleep(0.05)
            reply = dns_response(data, tcp=False)
            if reply is not None:
                self.sock.sendto(reply, client)


# -- DNS over TCP: replies that are not the answer ------------------------------------------

TCP_DNS_MODES = ("wrong-id", "garbage", "short")


def tcp_dns_app(mode: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A DNS-over-TCP server that answers every query with a reply of the given kind of wrong."""

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            query = await reader.readexactly(size)
            if mode == "wrong-id":
                reply = _forged(query, other_id=True)
            elif mode == "garbage":
                reply = b"\x00\x01garbage that is not a DNS message"
            else:
                reply = b""  # announce 65535 bytes, send none, close
                writer.write(struct.pack("!H", 65535))
            if reply:
                writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        writer.close()

    return app
