"""OpenVPN reachability: one P_CONTROL_HARD_RESET_CLIENT_V2, over UDP or TCP.

The client's first packet (OpenVPN's ssl_pkt.h, "reliability layer")::

    opcode<<3|key_id (0x38) | session id (8) | [tls-auth: HMAC | packet id (4) | time (4)]
    | ack count (1) = 0 | message packet id (4) = 0

Over TCP the packet is prefixed with its 2-byte length. A server answers with
P_CONTROL_HARD_RESET_SERVER_V2 (0x40) whose ack array acknowledges our message
packet id and whose "remote session id" is ours: that is the proof it is OpenVPN
and that it read our packet.

With tls-auth the HMAC covers ``packet id | time | opcode | session id | rest`` and
uses one of the static key's HMAC slots (key-direction 1 for a client: slot 1 out,
slot 0 in). A server with tls-auth or tls-crypt drops any packet without a valid
HMAC, silently: without the key, silence is the *designed* answer ("HMAC firewall
possible"), never blocking. With a tls-crypt key (:class:`TLSCrypt`) the packet is
wrapped instead: authenticated with HMAC-SHA256 and encrypted with AES-256-CTR, and the
server's reply must unwrap with the same key. tls-crypt-v2 (per-client keys) is not
implemented.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import time
from dataclasses import dataclass
from typing import Final, Literal

from probe.circumvention import CircumventionDetails, secret_hash
from probe.circumvention._net import Finding, Session, answered, run, unexpected
from probe.core.context import Context
from probe.core.records import CheckResult, Role

P_CONTROL_HARD_RESET_CLIENT_V2: Final = 7
P_CONTROL_HARD_RESET_SERVER_V2: Final = 8
_DIGESTS: Final = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512", "SHA384": "sha384"}
_PEM = re.compile(r"-----BEGIN OpenVPN Static key V1-----(.*?)-----END OpenVPN Static key V1-----", re.S)

SILENT_WITHOUT_KEY: Final = "no tls-auth key given: a server with tls-auth or tls-crypt drops packets " \
    "without a valid HMAC (HMAC firewall possible)"


@dataclass(frozen=True)
class TLSAuth:
    """A tls-auth static key (the 2048-bit ``OpenVPN Static key V1``) and how to use it."""

    key: bytes  # 256 bytes
    direction: int | None = 1  # the client's key-direction: 1 (usual), 0, or None (bidirectional)
    digest: str = "SHA1"  # OpenVPN's --auth

    @classmethod
    def from_text(cls, text: str, direction: int | None = 1, digest: str = "SHA1") -> TLSAuth:
        match = _PEM.search(text)
        body = match.group(1) if match else text
        key = bytes.fromhex("".join(line.strip() for line in body.splitlines() if not line.startswith("#")))
        if len(key) != 256:
            raise ValueError(f"a tls-auth key has 256 bytes, this one {len(key)}")
        if digest.upper() not in _DIGESTS:
            raise ValueError(f"unsupported tls-auth digest {digest!r} (one of {', '.join(_DIGESTS)})")
        return cls(key, direction, digest.upper())

    def _slot(self, index: int) -> bytes:
        size = hashlib.new(_DIGESTS[self.digest]).digest_size
        return self.key[index * 128 + 64: index * 128 + 64 + size]

    @property
    def out_key(self) -> bytes:
        return self._slot(0 if self.direction in (None, 0) else 1)

    @property
    def in_key(self) -> bytes:
        return self._slot(0 if self.direction in (None, 1) else 1)

    @property
    def size(self) -> int:
        return hashlib.new(_DIGESTS[self.digest]).digest_size

    def mac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, _DIGESTS[self.digest]).digest()


@dataclass(frozen=True)
class TLSCrypt:
    """A tls-crypt key: the control channel is HMAC-SHA256 authenticated and AES-256-CTR encrypted.

    Wire format (OpenVPN's tls_crypt.c): ``opcode | session id | packet id (4) | time (4) |
    tag (32) | AES-256-CTR(plaintext, IV = tag[:16])`` where the tag is HMAC-SHA256 over
    everything before it plus the plaintext. The client uses the key's second half
    (slot 1) to send and the first (slot 0) to read, as the server's normal direction implies.
    """

    key: bytes  # 256 bytes, the same "OpenVPN Static key V1" format

    @classmethod
    def from_text(cls, text: str) -> TLSCrypt:
        return cls(TLSAuth.from_text(text).key)

    def _keys(self, slot: int) -> tuple[bytes, bytes]:
        base = slot * 128
        return self.key[base: base + 32], self.key[base + 64: base + 96]  # cipher, hmac

    def wrap(self, head: bytes, plain: bytes, now: int | None = None) -> bytes:
        cipher_key, hmac_key = self._keys(1)
        header = head + struct.pack(">II", 1, int(time.time()) if now is None else now)
        tag = hmac.new(hmac_key, header + plain, hashlib.sha256).digest()
        return header + tag + _ctr(cipher_key, tag[:16], plain)

    def unwrap(self, packet: bytes, slot: int = 0) -> bytes | None:
        """The plaintext after the 17-byte header, or None when the tag does not verify."""
        if len(packet) < 49:
            return None
        cipher_key, hmac_key = self._keys(slot)
        header, tag = packet[:17], packet[17:49]
        plain = _ctr(cipher_key, tag[:16], packet[49:])
        ok = hmac.compare_digest(tag, hmac.new(hmac_key, header + plain, hashlib.sha256).digest())
        return plain if ok else None


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def client_reset(session_id: bytes, tls_auth: TLSAuth | None = None, now: int | None = None,
                 tls_crypt: TLSCrypt | None = None) -> bytes:
    """The hard-reset packet (without the TCP length prefix)."""
    head = bytes([P_CONTROL_HARD_RESET_CLIENT_V2 << 3]) + session_id
    rest = b"\x00" + struct.pack(">I", 0)  # no acks, message packet id 0
    if tls_crypt is not None:
        return tls_crypt.wrap(head, rest, now)
    if tls_auth is None:
        return head + rest
    replay = struct.pack(">II", 1, int(time.time()) if now is None else now)
    digest = tls_auth.mac(tls_auth.out_key, replay + head + rest)
    return head + digest + replay + rest


@dataclass(frozen=True)
class ServerReset:
    opcode: int
    session_id: bytes
    acks: tuple[int, ...]
    remote_session_id: bytes | None
    hmac_ok: bool | None


def parse_reply(packet: bytes, tls_auth: TLSAuth | None = None, tls_crypt: TLSCrypt | None = None) -> ServerReset:
    """Parse a control packet from the server; raises ValueError when it is not one."""
    if len(packet) < 9:
        raise ValueError("short packet")
    opcode, sid = packet[0] >> 3, packet[1:9]
    pos, hmac_ok = 9, None
    if tls_crypt is not None:
        plain = tls_crypt.unwrap(packet)
        if plain is None:
            raise ValueError("the tls-crypt tag does not verify with our key")
        packet, pos, hmac_ok = packet[:9] + plain, 9, True
    elif tls_auth is not None:
        size = tls_auth.size
        digest, replay = packet[pos: pos + size], packet[pos + size: pos + size + 8]
        pos += size + 8
        expected = tls_auth.mac(tls_auth.in_key, replay + packet[:9] + packet[pos:])
        hmac_ok = hmac.compare_digest(digest, expected)
    if len(packet) < pos + 1:
        raise ValueError("no ack array")
    count = packet[pos]
    pos += 1
    if len(packet) < pos + 4 * count + (8 if count else 0):
        raise ValueError("truncated ack array")
    acks = struct.unpack(f">{count}I", packet[pos: pos + 4 * count]) if count else ()
    pos += 4 * count
    remote = packet[pos: pos + 8] if count else None
    return ServerReset(opcode, sid, tuple(acks), remote, hmac_ok)


def _judge(packet: bytes, session_id: bytes, tls_auth: TLSAuth | None, tls_crypt: TLSCrypt | None = None) -> Finding:
    try:
        reply = parse_reply(packet, tls_auth, tls_crypt)
    except ValueError as exc:
        return unexpected(f"reply is not an OpenVPN control packet ({exc})", first_bytes=packet[:4].hex())
    if reply.opcode != P_CONTROL_HARD_RESET_SERVER_V2:
        return unexpected(f"reply opcode {reply.opcode} is not P_CONTROL_HARD_RESET_SERVER_V2", opcode=reply.opcode)
    if reply.remote_session_id != session_id or 0 not in reply.acks:
        return unexpected("a server reset that does not acknowledge our session", opcode=reply.opcode)
    if reply.hmac_ok is False:
        return unexpected("the server's tls-auth HMAC does not verify with our key")
    proof = "" if not reply.hmac_ok else " with a valid tls-crypt tag" if tls_crypt else " with a valid tls-auth HMAC"
    return answered(f"P_CONTROL_HARD_RESET_SERVER_V2 acknowledging our session id{proof}",
                    opcode=reply.opcode, hmac_verified=reply.hmac_ok)


async def check_openvpn(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target",
    transport: Literal["udp", "tcp"] = "udp", tls_auth: TLSAuth | None = None, tls_crypt: TLSCrypt | None = None,
    timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """Send one client hard reset and wait for the server's (bounded by ``timeout``)."""
    session_id = os.urandom(8)
    packet = client_reset(session_id, tls_auth, tls_crypt=tls_crypt)
    key = tls_crypt.key if tls_crypt else tls_auth.key if tls_auth else None

    async def body(s: Session) -> Finding:
        s.info["tls_auth"] = tls_auth is not None
        s.info["tls_crypt"] = tls_crypt is not None
        if transport == "udp":
            reply = await s.udp_exchange(address, port, packet, accept=lambda d: len(d) >= 9)
            return _judge(reply, session_id, tls_auth, tls_crypt)
        reader, writer = await s.connect(address, port)
        await s.send(writer, struct.pack(">H", len(packet)) + packet)
        (length,) = struct.unpack(">H", await s.read_exactly(reader, 2))
        return _judge(await s.read_exactly(reader, length), session_id, tls_auth, tls_crypt)

    return await run("openvpn", transport, address, port, ctx, target=target, role=role,
                     secret_sha256=secret_hash(key), silent_by_design=None if key else SILENT_WITHOUT_KEY,
                     body=body, timeout=timeout)
