"""Reading a response body from a server that may be hostile: decoded bytes are capped as decoded.

httpx decodes a whole network read at once, so a 64 KiB read of a gzip bomb inflates to
tens of megabytes before any cap can apply (184 MB RSS for one bomb). Here the raw bytes
are read and inflated by zlib with ``max_length``: a stage never produces more than the
bytes still wanted, so memory is bounded by the cap whatever the compression ratio, for
gzip, deflate and stacked codings (``Content-Encoding: gzip, gzip``). A coding we do not
decode (br, zstd, ...) is kept as received, as httpx does; we only ask for gzip and deflate.

:func:`send_streamed` also tells a reply without a status line (HTTP/0.9) from a silent close.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from probe.core import failures

ACCEPT_ENCODING = "gzip, deflate"
MAX_CODINGS = 4  # stacked content codings decoded; more is a decoding error
BUDGET_FACTOR = 16  # a stage inflates at most 16 x the cap (+1 MiB), whatever the next one keeps
_PIECE = 1 << 16  # decoded bytes produced per step
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class Body:
    data: bytes  # at most the cap
    length: int
    truncated: bool
    sha256: str


class _Inflate:
    """One content coding, inflated at most ``limit`` bytes per :meth:`take`, ``budget`` in all.

    The budget bounds the work of an intermediate stage whose output the next one turns into
    nothing (empty deflate blocks): without it, one network read could keep the loop inflating.
    """

    def __init__(self, coding: str, budget: int) -> None:
        self.coding, self.budget, self.produced = coding, budget, 0
        self._z = zlib.decompressobj(_WBITS[coding])
        self._pending = b""
        self._started = False

    @property
    def finished(self) -> bool:
        return self._z.eof

    def feed(self, data: bytes) -> None:
        self._pending += data

    def take(self, limit: int) -> bytes:
        if not self._pending or self._z.eof:
            self._pending = b""
            return b""
        try:
            out = self._z.decompress(self._pending, limit)
        except zlib.error as exc:
            if self.coding == "deflate" and not self._started:
                # Servers send raw deflate as often as the zlib format RFC 9110 names.
                self._z, self._started = zlib.decompressobj(-zlib.MAX_WBITS), True
                return self.take(limit)
            raise httpx.DecodingError(f"{self.coding}: {exc}") from exc
        self._started = True
        self._pending = self._z.unconsumed_tail
        self.produced += len(out)
        if self.produced > self.budget:
            raise httpx.DecodingError(f"{self.coding}: inflates to more than {self.budget} bytes")
        return out


def _stages(headers: httpx.Headers, cap: int) -> list[_Inflate]:
    """Decoders for the response's codings, the last applied first; none if one is unknown."""
    codings = [c.strip().lower() for value in headers.get_list("content-encoding")
               for c in value.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if any(c not in _WBITS for c in codings):
        return []  # kept as received, like httpx's IdentityDecoder for unknown codings
    if len(codings) > MAX_CODINGS:
        raise httpx.DecodingError(f"{len(codings)} stacked content codings (at most {MAX_CODINGS})")
    budget = BUDGET_FACTOR * cap + (1 << 20)
    return [_Inflate(c, budget) for c in reversed(codings)]


def _pull(stages: list[_Inflate], limit: int) -> bytes:
    """Up to ``limit`` decoded bytes from the last stage, pulling input through earlier ones."""
    *earlier, last = stages
    while True:
        out = last.take(limit)
        if out or not earlier or last.finished:
            return out
        more = _pull(earlier, limit)
        if not more:
            return b""
        last.feed(more)


class _Received:
    """Counts the bytes the HTTP layer read, through httpcore's ``trace`` extension.

    The TCP stream is counted until TLS starts; then only the TLS stream (the
    handshake's bytes are not an HTTP reply).
    """

    def __init__(self) -> None:
        self.bytes = 0

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        self.bytes = 0
        stream = info["return_value"]
        read = stream.read

        async def counted(max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = await read(max_bytes, timeout)
            self.bytes += len(data)
            return data

        stream.read = counted


async def send_streamed(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """``client.send(request, stream=True)``, telling a reply without a status line from a silent close.

    httpcore says "disconnected without sending a response" even when bytes came: a reply
    with no status line (HTTP/0.9, another protocol) is a protocol error, not an EOF.
    """
    received = _Received()
    request.extensions = {**request.extensions, "trace": received}
    try:
        return await client.send(request, stream=True)
    except httpx.RemoteProtocolError as exc:
        if received.bytes and failures.classify(exc) == failures.EOF_ERROR:
            raise failures.ProbeError(failures.HTTP_PROTOCOL_ERROR, "http_round_trip",
                                      "a reply without an HTTP status line") from exc
        raise


async def read_capped(response: httpx.Response, cap: int) -> Body:
    """The decoded body of a streamed response, reading and inflating no more than ``cap`` bytes."""
    stages = _stages(response.headers, cap)
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    length = 0

    def keep(piece: bytes) -> None:
        nonlocal length
        digest.update(piece)
        chunks.append(piece)
        length += len(piece)

    async for raw in response.aiter_raw():
        if not stages:
            keep(raw[: cap - length])
        else:
            stages[0].feed(raw)
            while length < cap and (piece := _pull(stages, min(cap - length, _PIECE))):
                keep(piece)
        if length >= cap:
            break
    return Body(b"".join(chunks), length, length >= cap, digest.hexdigest())
