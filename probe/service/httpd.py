"""A small HTTP/1.1 server on asyncio streams, for the test helper and the lab's hosts and block pages.

Small on purpose: one request per connection, ``Connection: close``, bodies by
Content-Length. It only has to be a real, well-behaved peer for the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    sni: str | None = None


@dataclass
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for streamed bodies


Handler = Callable[[Request], Awaitable[Response]]
REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 451: "Unavailable",
           503: "Service Unavailable"}


def page(title: str, text: str) -> bytes:
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>".encode()


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if len(head) > MAX_HEAD:
        raise ValueError("head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
    return Request(method, path, headers, body)


async def write_response(writer: asyncio.StreamWriter, response: Response) -> None:
    headers = dict(response.headers)
    body = response.body
    if isinstance(body, bytes):
        headers.setdefault("Content-Length", str(len(body)))
    elif response.length is not None:
        headers.setdefault("Content-Length", str(response.length))
    headers.setdefault("Content-Type", "text/html; charset=utf-8")
    headers["Connection"] = "close"
    head = f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1"))
    if isinstance(body, bytes):
        writer.write(body)
        await writer.drain()
    else:
        async for chunk in body:
            writer.write(chunk)
            await writer.drain()


def connection_handler(handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            ssl_object = writer.get_extra_info("ssl_object")
            request.sni = getattr(ssl_object, "lab_sni", None) if ssl_object else None
            await write_response(writer, await handler(request))
        except Exception:  # noqa: BLE001, S110 - a client that goes away is normal here
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return serve
