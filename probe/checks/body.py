"""Reading a response body from a server that may be hostile: decoded bytes are capped as decoded.

httpx decodes a whole network read at once, so a 64 KiB read of a gzip bomb inflates to
tens of megabytes before any cap can apply (184 MB RSS for one bomb). Here the raw bytes
are read and inflated by zlib with ``max_length``: a stage never produces more than the
bytes still wanted, so memory is bounded by the cap whatever the compression ratio, for
gzip, deflate and stacked codings (``Content-Encoding: gzip, gzip``). A coding we do not
decode (br, zstd, ...) is kept as received, as httpx does; we only ask for gzip and deflate.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import httpx

ACCEPT_ENCODING = "gzip, deflate"
MAX_CODINGS = 4  # stacked content codings decoded; more is a decoding error
_PIECE = 1 << 16  # decoded bytes produced per step
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class Body:
    data: bytes  # at most the cap
    length: int
    truncated: bool
    sha256: str


class _Inflate:
    """One content coding, inflated at most ``limit`` bytes per :meth:`take`."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._z = zlib.decompressobj(_WBITS[coding])
        self._pending = b""
        self._started = False

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
        return out


def _stages(headers: httpx.Headers) -> list[_Inflate]:
    """Decoders for the response's codings, the last applied first; none if one is unknown."""
    codings = [c.strip().lower() for value in headers.get_list("content-encoding")
               for c in value.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if any(c not in _WBITS for c in codings):
        return []  # kept as received, like httpx's IdentityDecoder for unknown codings
    if len(codings) > MAX_CODINGS:
        raise httpx.DecodingError(f"{len(codings)} stacked content codings (at most {MAX_CODINGS})")
    return [_Inflate(c) for c in reversed(codings)]


def _pull(stages: list[_Inflate], limit: int) -> bytes:
    """Up to ``limit`` decoded bytes from the last stage, pulling input through earlier ones."""
    *earlier, last = stages
    while True:
        out = last.take(limit)
        if out or not earlier:
            return out
        more = _pull(earlier, limit)
        if not more:
            return b""
        last.feed(more)


async def read_capped(response: httpx.Response, cap: int) -> Body:
    """The decoded body of a streamed response, reading and inflating no more than ``cap`` bytes."""
    stages = _stages(response.headers)
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
