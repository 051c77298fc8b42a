"""MTProto proxy reachability: the handshakes Telegram clients use, then one req_pq_multi.

A proxy link (``tg://proxy?server=&port=&secret=`` or ``https://t.me/proxy?...``)
gives the server and a secret of one of three kinds:

- plain (16 bytes) and ``dd`` (secure, padded frames): the *obfuscated2* handshake.
  64 random bytes carry the AES-256-CTR keys (``SHA256(bytes[8:40] || secret)``, IV
  ``bytes[40:56]``; the reverse direction uses the same bytes reversed), a protocol
  tag at 56..60 and the data-centre index at 60..62, encrypted by themselves.
  The proxy only proves it understood by relaying Telegram's answer.
- ``ee`` + 16 bytes + domain (fake-TLS): a 517-byte TLS ClientHello for the domain
  whose 32-byte "random" is ``HMAC-SHA256(secret, hello with zero random)`` with the
  last 4 bytes XORed with the time. The proxy answers a ServerHello, a
  ChangeCipherSpec and one application-data record, and puts
  ``HMAC-SHA256(secret, client random || that answer with zero random)`` in its own
  random: checking it proves the answer came from the proxy, not its mask site (the
  real web site it forwards strangers to). Then obfuscated2 runs inside TLS records.

Then one ``req_pq_multi`` (an unencrypted MTProto message, as clients send to ping a
proxy) must come back as ``resPQ`` with our nonce: Telegram answered through the proxy.

Without the right secret a proxy says nothing (or lets its mask site answer): that
is ``silent``, never blocking.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from probe.circumvention import SILENT, CircumventionDetails, secret_hash
from probe.circumvention._net import Finding, Session, answered, run, unexpected
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role

TAG_ABRIDGED: Final = b"\xef\xef\xef\xef"
TAG_INTERMEDIATE: Final = b"\xee\xee\xee\xee"
TAG_SECURE: Final = b"\xdd\xdd\xdd\xdd"
REQ_PQ_MULTI: Final = struct.pack("<I", 0xBE7E8EF1)
RES_PQ: Final = struct.pack("<I", 0x05162463)
TLS_HELLO_SIZE: Final = 517
SILENT_BY_DESIGN: Final = "an MTProto proxy ignores clients without its secret"
_RESERVED_STARTS: Final = (b"HEAD", b"POST", b"GET ", TAG_INTERMEDIATE, TAG_SECURE, b"\x16\x03\x01\x02")
_MAX_FRAME: Final = 1 << 16


@dataclass(frozen=True)
class ProxyLink:
    server: str
    port: int
    key: bytes  # the 16-byte secret proper
    mode: str  # "plain", "secure" (dd) or "fake_tls" (ee)
    domain: str | None = None

    @property
    def secret_sha256(self) -> str | None:
        return secret_hash(self.key)


def _secret_bytes(text: str) -> bytes:
    text = text.strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_secret(text: str) -> tuple[bytes, str, str | None]:
    raw = _secret_bytes(text)
    if len(raw) == 16:
        return raw, "plain", None
    if len(raw) == 17 and raw[0] == 0xDD:
        return raw[1:], "secure", None
    if len(raw) > 17 and raw[0] == 0xEE:
        return raw[1:17], "fake_tls", raw[17:].decode("ascii")
    raise ValueError("an MTProto secret is 16 bytes, dd + 16 bytes, or ee + 16 bytes + domain")


def parse_link(link: str) -> ProxyLink:
    """``tg://proxy?server=..&port=..&secret=..`` or the same on ``https://t.me/proxy``."""
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    missing = [k for k in ("server", "port", "secret") if k not in query]
    if missing:
        raise ValueError(f"proxy link lacks {', '.join(missing)}")
    key, mode, domain = parse_secret(query["secret"])
    return ProxyLink(query["server"], int(query["port"]), key, mode, domain)


# -- obfuscated2 -------------------------------------------------------------------------


def _ctr(key: bytes, iv: bytes) -> CipherContext:
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


@dataclass
class Obfuscated2:
    """The client side of one obfuscated2 stream: the 64-byte header and both ciphers."""

    header: bytes
    encryptor: CipherContext
    decryptor: CipherContext

    @classmethod
    def client(cls, key: bytes, tag: bytes, dc: int) -> Obfuscated2:
        while True:  # bounded in practice: each try fails with probability ~2^-7
            rnd = bytearray(os.urandom(64))
            if rnd[0] != 0xEF and bytes(rnd[:4]) not in _RESERVED_STARTS and rnd[4:8] != b"\x00" * 4:
                break
        rnd[56:60] = tag
        rnd[60:62] = struct.pack("<h", dc)
        rev = bytes(rnd[8:56])[::-1]
        enc = _ctr(hashlib.sha256(bytes(rnd[8:40]) + key).digest(), bytes(rnd[40:56]))
        dec = _ctr(hashlib.sha256(rev[:32] + key).digest(), rev[32:48])
        encrypted = enc.update(bytes(rnd))
        return cls(bytes(rnd[:56]) + encrypted[56:], enc, dec)


def req_pq_multi(nonce: bytes, now: float | None = None) -> bytes:
    """An unencrypted MTProto message: auth_key_id 0, message id, length, req_pq_multi#be7e8ef1."""
    msg_id = int((time.time() if now is None else now) * 2**32) & ~3
    body = REQ_PQ_MULTI + nonce
    return b"\x00" * 8 + struct.pack("<qI", msg_id, len(body)) + body


def frame(payload: bytes, mode: str) -> bytes:
    """Intermediate framing (4-byte little-endian length); secure mode adds 0-15 bytes of padding."""
    if mode != "plain":
        payload += os.urandom(os.urandom(1)[0] % 16)
    return struct.pack("<I", len(payload)) + payload


# -- fake TLS ----------------------------------------------------------------------------


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">HH", kind, len(data)) + data


def fake_tls_hello(key: bytes, domain: str, now: int | None = None) -> bytes:
    """A 517-byte ClientHello for ``domain`` whose random is the HMAC that proves we hold the secret."""
    name = domain.encode("ascii")
    suites = bytes.fromhex("130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035")
    exts = _ext(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    exts += _ext(0x0017, b"") + _ext(0xFF01, b"\x00") + _ext(0x000A, bytes.fromhex("0006001d00170018"))
    exts += _ext(0x000B, b"\x01\x00") + _ext(0x0010, bytes.fromhex("000c02683208687474702f312e31"))
    exts += _ext(0x000D, bytes.fromhex("00080403080404010201"))
    exts += _ext(0x0033, struct.pack(">HHH", 36, 0x001D, 32) + os.urandom(32))
    exts += _ext(0x002B, bytes.fromhex("0403040303"))
    head = b"\x03\x03" + b"\x00" * 32 + b"\x20" + os.urandom(32) + struct.pack(">H", len(suites)) + suites + b"\x01\x00"
    fixed = 5 + 4 + len(head) + 2 + len(exts)
    pad = TLS_HELLO_SIZE - fixed - 4
    if pad < 0:
        raise ValueError("domain too long for a 517-byte ClientHello")
    exts += _ext(0x0015, b"\x00" * pad)
    body = head + struct.pack(">H", len(exts)) + exts
    hello = b"\x16\x03\x01" + struct.pack(">H", len(body) + 4) + b"\x01" + struct.pack(">I", len(body))[1:] + body
    digest = hmac.new(key, hello, hashlib.sha256).digest()
    stamp = struct.pack("<I", (int(time.time()) if now is None else now) & 0xFFFFFFFF)
    random = digest[:28] + bytes(a ^ b for a, b in zip(digest[28:], stamp, strict=True))
    return hello[:11] + random + hello[43:]


def server_hmac_ok(key: bytes, client_random: bytes, answer: bytes) -> bool:
    """The proxy's random must be HMAC(secret, client random || answer with a zero random)."""
    zeroed = answer[:11] + b"\x00" * 32 + answer[43:]
    expected = hmac.new(key, client_random + zeroed, hashlib.sha256).digest()
    return hmac.compare_digest(expected, answer[11:43])


class _Stream:
    """Plain TCP, or TLS application-data records after the fake-TLS handshake."""

    def __init__(self, s: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        self.s, self.reader, self.writer, self.tls, self.buffer = s, reader, writer, tls, b""

    async def send(self, data: bytes) -> None:
        if self.tls:
            data = b"".join(b"\x17\x03\x03" + struct.pack(">H", len(chunk)) + chunk
                            for chunk in (data[i:i + 16384] for i in range(0, len(data), 16384)))
        await self.s.send(self.writer, data)

    async def recv(self, n: int) -> bytes:
        if not self.tls:
            return await self.s.read_exactly(self.reader, n)
        for _ in range(64):  # bounded number of records
            if len(self.buffer) >= n:
                break
            kind, payload = await read_record(self.s, self.reader)
            if kind == 0x17:
                self.buffer += payload
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        if len(out) < n:
            raise failures.ProbeError(failures.EOF_ERROR, "read", "too many records")
        return out


async def read_record(s: Session, reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await s.read_exactly(reader, 5)
    (length,) = struct.unpack(">H", head[3:5])
    return head[0], await s.read_exactly(reader, length)


async def check_mtproto(
    link: str | ProxyLink, ctx: Context, *, target: str, role: Role = "target", dc: int = 2,
    timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """Handshake with the proxy in ``link`` and ping Telegram through it (all waits bounded)."""
    proxy = parse_link(link) if isinstance(link, str) else link

    async def body(s: Session) -> Finding:
        s.info["mode"] = proxy.mode
        reader, writer = await s.connect(proxy.server, proxy.port)
        tls = proxy.mode == "fake_tls"
        hmac_ok: bool | None = None
        if tls:
            hello = fake_tls_hello(proxy.key, proxy.domain or "")
            await s.send(writer, hello)
            answer = b""
            for expected in (0x16, 0x14, 0x17):
                kind, payload = await read_record(s, reader)
                answer += bytes([kind]) + b"\x03\x03" + struct.pack(">H", len(payload)) + payload
                if kind != expected:
                    break
            hmac_ok = len(answer) > 43 and answer[0] == 0x16 and server_hmac_ok(proxy.key, hello[11:43], answer)
            s.info["server_hmac"] = hmac_ok
            if not hmac_ok:
                if answer[0] == 0x16:
                    return Finding(SILENT, "a TLS server answered, but its random is not the proxy's HMAC: the "
                                   "mask site answered, the proxy did not accept our secret (silent by design)",
                                   info={"mask_answered": True})
                return unexpected("the answer to our fake-TLS ClientHello is not TLS")
            writer.write(b"\x14\x03\x03\x00\x01\x01")  # ChangeCipherSpec, as clients send
        stream = _Stream(s, reader, writer, tls)
        obf = Obfuscated2.client(proxy.key, TAG_SECURE if proxy.mode != "plain" else TAG_INTERMEDIATE, dc)
        nonce = os.urandom(16)
        await stream.send(obf.header + obf.encryptor.update(frame(req_pq_multi(nonce), proxy.mode)))
        try:
            (length,) = struct.unpack("<I", obf.decryptor.update(await stream.recv(4)))
            if not 20 <= length <= _MAX_FRAME:
                return unexpected(f"a frame of {length} bytes is not a resPQ")
            message = obf.decryptor.update(await stream.recv(length))
        except Exception as exc:
            if not hmac_ok:
                raise
            return answered(f"the fake-TLS answer carries the proxy's HMAC, but Telegram did not answer "
                            f"through it ({failures.classify(exc)})", rpc_ok=False,
                            rpc_failure=failures.classify(exc))
        if message[20:24] == RES_PQ and message[24:40] == nonce:
            proof = "fake-TLS HMAC verified, then " if hmac_ok else ""
            return answered(f"{proof}resPQ with our nonce: Telegram answered req_pq_multi through the proxy",
                            rpc_ok=True)
        return unexpected("the reply through the proxy is not a resPQ for our nonce", rpc_ok=False)

    return await run("mtproto", "tcp", proxy.server, proxy.port, ctx, target=target, role=role,
                     secret_sha256=proxy.secret_sha256, silent_by_design=SILENT_BY_DESIGN, body=body,
                     timeout=timeout)
