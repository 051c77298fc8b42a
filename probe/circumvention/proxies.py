"""Open proxies: SOCKS5 greeting and HTTP CONNECT.

- SOCKS5 (RFC 1928): the greeting ``05 01 00`` (one method: no authentication) gets
  ``05 xx`` from any SOCKS5 server, whatever it thinks of our methods (``05 ff``:
  it wants credentials). With ``connect_to``, a CONNECT shows whether it carries traffic.
- HTTP CONNECT (RFC 9110 9.3.6): a 2xx reply, or a 407 with Proxy-Authenticate,
  identifies a proxy. Another HTTP status shows an HTTP server, not a proxy.

Neither protocol has a silent mode: a server that accepts the connection and then
stays silent (or resets) after our first packet counts as blocked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from probe.circumvention import CircumventionDetails
from probe.circumvention._net import Finding, Session, answered, run, unexpected
from probe.core.context import Context
from probe.core.records import CheckResult, Role

_SOCKS_REPLIES = {
    0: "succeeded", 1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired", 7: "command not supported",
    8: "address type not supported",
}
MAX_HEADER_LINES = 64


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def socks5_connect_request(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        name = host.encode("idna")
        addr = b"\x03" + bytes([len(name)]) + name
    return b"\x05\x01\x00" + addr + struct.pack(">H", port)


async def socks5_handshake(s: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                           username: str | None = None, password: str | None = None) -> int:
    """Greeting (and RFC 1929 auth when credentials are given); returns the chosen method."""
    await s.send(writer, b"\x05\x02\x00\x02" if username is not None else b"\x05\x01\x00")
    reply = await s.read_exactly(reader, 2)
    if reply[0] != 5:
        raise unexpected(f"reply {reply.hex()} to the SOCKS5 greeting is not SOCKS5", first_bytes=reply.hex())
    if reply[1] == 2 and username is not None:
        user, pw = username.encode(), (password or "").encode()
        await s.send(writer, b"\x01" + bytes([len(user)]) + user + bytes([len(pw)]) + pw)
        status = await s.read_exactly(reader, 2)
        if status[1] != 0:
            raise answered("a SOCKS5 server, which rejected our credentials", method=2, auth_ok=False)
    return reply[1]


async def socks5_connect(s: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                         port: int) -> int:
    """Send CONNECT and read the whole reply; returns the reply code."""
    await s.send(writer, socks5_connect_request(host, port))
    head = await s.read_exactly(reader, 4, phase="connect_through")
    atyp = head[3]
    size = {1: 4, 4: 16}.get(atyp)
    if size is None:
        size = (await s.read_exactly(reader, 1))[0]
    await s.read_exactly(reader, size + 2)
    return head[1]


async def check_socks5(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target",
    connect_to: str | None = None, username: str | None = None, password: str | None = None,
    timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    async def body(s: Session) -> Finding:
        reader, writer = await s.connect(address, port)
        method = await socks5_handshake(s, reader, writer, username=username, password=password)
        if method == 0xFF:
            return answered("05 ff: a SOCKS5 server that wants other credentials", method=method)
        if connect_to is None:
            return answered(f"05 {method:02x}: a SOCKS5 server", method=method)
        host, dport = split_hostport(connect_to)
        code = await socks5_connect(s, reader, writer, host, dport)
        meaning = _SOCKS_REPLIES.get(code, "unknown")
        return answered(f"a SOCKS5 server; CONNECT {connect_to}: {meaning}", method=method,
                        connect_reply=code, carries_traffic=code == 0)

    return await run("socks5", "tcp", address, port, ctx, target=target, role=role, secret_sha256=None,
                     silent_by_design=None, body=body, timeout=timeout)


async def check_http_connect(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target",
    connect_to: str | None = None, timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """CONNECT ``connect_to`` (default: the proxy's own address and port, which stays inside)."""
    authority = connect_to or (f"[{address}]:{port}" if ":" in address else f"{address}:{port}")

    async def body(s: Session) -> Finding:
        reader, writer = await s.connect(address, port)
        await s.send(writer, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        status_line = await s.read_line(reader)
        parts = status_line.decode("latin-1").split(maxsplit=2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return unexpected("the reply to CONNECT is not HTTP", first_bytes=status_line[:8].hex())
        status = int(parts[1])
        headers: list[str] = []
        for _ in range(MAX_HEADER_LINES):
            line = (await s.read_line(reader)).decode("latin-1").strip()
            if not line:
                break
            headers.append(line.split(":", 1)[0].strip().lower())
        if 200 <= status < 300:
            return answered(f"HTTP {status} to CONNECT {authority}: a proxy that carries traffic", status=status,
                            carries_traffic=True)
        if status == 407 and "proxy-authenticate" in headers:
            return answered("HTTP 407 with Proxy-Authenticate: a proxy that wants credentials", status=status)
        return unexpected(f"HTTP {status} to CONNECT: an HTTP server, but nothing shows it is a proxy",
                          status=status)

    return await run("http_connect", "tcp", address, port, ctx, target=target, role=role, secret_sha256=None,
                     silent_by_design=None, body=body, timeout=timeout)
