"""WireGuard reachability: a real Noise_IKpsk2 handshake initiation, and its response.

The initiation (148 bytes: type 1, sender index, ephemeral key, encrypted static key,
encrypted TAI64N timestamp, mac1, mac2) follows the WireGuard paper, section 5.4.2.
mac1 is keyed BLAKE2s over the message with ``HASH("mac1----" || server public key)``:
a server drops anything with a bad mac1 *before* any other work, and drops an
initiation from a static key it does not know after decrypting it. Both drops are
silent: WireGuard never answers a stranger.

So with the volunteer's own client private key (a configured peer) the server
answers with a 92-byte response (type 2, our sender index as receiver), which this
check decrypts: the empty AEAD payload only opens with the keys of a server holding
the private key and our peer's pre-shared key. With only the server's public key,
the check sends an initiation from a throwaway key, and silence is the designed
answer ("silent"), never blocking.

Primitives: X25519 and ChaCha20-Poly1305 from ``cryptography``, BLAKE2s from hashlib.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from probe.circumvention import CircumventionDetails, secret_hash
from probe.circumvention._net import Finding, Session, answered, run, unexpected
from probe.core.context import Context
from probe.core.records import CheckResult, Role

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
SILENT_WITHOUT_KEY: Final = "only the server's public key given: WireGuard drops initiations from " \
    "unknown peers without a word"


def _hash(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts)).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    t0 = _hmac(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = _hmac(t0, prev + bytes([i]))
        out.append(prev)
    return out


def _aead(key: bytes, counter: int, plain: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(b"\x00" * 4 + struct.pack("<Q", counter), plain, ad)


def _open(key: bytes, counter: int, sealed: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).decrypt(b"\x00" * 4 + struct.pack("<Q", counter), sealed, ad)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def tai64n(now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    seconds = int(now)
    return struct.pack(">QI", 0x400000000000000A + seconds, int((now - seconds) * 1e9))


def parse_key(text: str) -> bytes:
    """A base64 WireGuard key (as in ``wg genkey`` / ``wg pubkey``)."""
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard key has 32 bytes")
    return raw


@dataclass(frozen=True)
class Handshake:
    """What the initiator keeps to check the response."""

    message: bytes
    sender_index: int
    chaining_key: bytes
    hash: bytes
    ephemeral: X25519PrivateKey
    static: X25519PrivateKey


def initiation(server_public: bytes, client_private: bytes | None = None, *,
               sender_index: int | None = None, now: float | None = None) -> Handshake:
    """Build a handshake initiation; a throwaway static key when no client key is given."""
    static = X25519PrivateKey.from_private_bytes(client_private) if client_private else X25519PrivateKey.generate()
    server = X25519PublicKey.from_public_bytes(server_public)
    ephemeral = X25519PrivateKey.generate()
    index = int.from_bytes(os.urandom(4), "little") if sender_index is None else sender_index
    ck = _hash(CONSTRUCTION)
    h = _hash(_hash(ck, IDENTIFIER), server_public)
    e_pub = _raw(ephemeral.public_key())
    (ck,) = _kdf(ck, e_pub, 1)
    h = _hash(h, e_pub)
    ck, key = _kdf(ck, ephemeral.exchange(server), 2)
    enc_static = _aead(key, 0, _raw(static.public_key()), h)
    h = _hash(h, enc_static)
    ck, key = _kdf(ck, static.exchange(server), 2)
    enc_time = _aead(key, 0, tai64n(now), h)
    h = _hash(h, enc_time)
    body = struct.pack("<I", 1) + struct.pack("<I", index) + e_pub + enc_static + enc_time
    mac1 = _mac(_hash(LABEL_MAC1, server_public), body)
    message = body + mac1 + b"\x00" * 16
    assert len(message) == INITIATION_SIZE
    return Handshake(message, index, ck, h, ephemeral, static)


def verify_response(hs: Handshake, packet: bytes, psk: bytes = b"\x00" * 32) -> bool:
    """True when the response's mac1 and its empty AEAD payload verify: the peer holds the keys."""
    if len(packet) != RESPONSE_SIZE or packet[0] != 2:
        return False
    if struct.unpack("<I", packet[8:12])[0] != hs.sender_index:
        return False
    mac1 = _mac(_hash(LABEL_MAC1, _raw(hs.static.public_key())), packet[:60])
    if not hmac.compare_digest(mac1, packet[60:76]):
        return False
    e_r = packet[12:44]
    peer = X25519PublicKey.from_public_bytes(e_r)
    (ck,) = _kdf(hs.chaining_key, e_r, 1)
    h = _hash(hs.hash, e_r)
    (ck,) = _kdf(ck, hs.ephemeral.exchange(peer), 1)
    (ck,) = _kdf(ck, hs.static.exchange(peer), 1)
    ck, tau, key = _kdf(ck, psk, 3)
    h = _hash(h, tau)
    try:
        _open(key, 0, packet[44:60], h)
    except Exception:  # noqa: BLE001 - InvalidTag: not our peer
        return False
    return True


async def check_wireguard(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target",
    server_public_key: str, client_private_key: str | None = None, preshared_key: str | None = None,
    timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """One initiation, retried once, waiting (bounded) for the response or a cookie reply."""
    server_public = parse_key(server_public_key)
    client = parse_key(client_private_key) if client_private_key else None
    psk = parse_key(preshared_key) if preshared_key else b"\x00" * 32
    hs = initiation(server_public, client)

    def ours(packet: bytes) -> bool:
        if len(packet) == RESPONSE_SIZE and packet[0] == 2:  # receiver index at 8..12
            return bool(struct.unpack("<I", packet[8:12])[0] == hs.sender_index)
        if len(packet) == COOKIE_REPLY_SIZE and packet[0] == 3:  # receiver index at 4..8
            return bool(struct.unpack("<I", packet[4:8])[0] == hs.sender_index)
        return False

    async def body(s: Session) -> Finding:
        s.info["client_key"] = client is not None
        reply = await s.udp_exchange(address, port, hs.message, accept=ours)
        if reply[0] == 3:
            return answered("a cookie reply to our initiation: the server is under load, but it is WireGuard "
                            "and it knows our key", message_type=3)
        if verify_response(hs, reply, psk):
            return answered("a handshake response that decrypts with our keys", message_type=2)
        return unexpected("a type-2 reply that does not verify with our keys", message_type=2)

    return await run("wireguard", "udp", address, port, ctx, target=target, role=role,
                     secret_sha256=secret_hash(client) if client else None,
                     silent_by_design=None if client else SILENT_WITHOUT_KEY, body=body, timeout=timeout)
