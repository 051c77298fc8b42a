"""Pure parts of the circumvention family: packet formats, link parsing, status rules, verdict rows,
options. Real servers are in test_circumvention_loopback.py and tests/lab/test_circumvention_lab.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from probe.analysis import circumvention as family_verdict
from probe.circumvention import (
    ANSWERED,
    BLOCKED,
    INCONCLUSIVE,
    SILENT,
    CircumventionDetails,
    dispatch,
    make_result,
    mtproto,
    openvpn,
    secret_hash,
    wireguard,
)
from probe.circumvention._net import Finding, Session, answered, run
from probe.core import failures
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import ProbeMeta, check_record

# -- OpenVPN ------------------------------------------------------------------------------------


def test_openvpn_client_reset_layout() -> None:
    sid = bytes(range(8))
    packet = openvpn.client_reset(sid)
    assert packet == b"\x38" + sid + b"\x00" + b"\x00\x00\x00\x00"


def _server_reply(client_sid: bytes, key: openvpn.TLSAuth | None) -> bytes:
    """What a server sends back: its session id, an ack of our packet id 0, our session id, its packet id."""
    head = bytes([openvpn.P_CONTROL_HARD_RESET_SERVER_V2 << 3]) + b"S" * 8
    rest = b"\x01" + struct.pack(">I", 0) + client_sid + struct.pack(">I", 0)
    if key is None:
        return head + rest
    server_side = openvpn.TLSAuth(key.key, 0, key.digest)  # the server's key-direction
    replay = struct.pack(">II", 1, 1_700_000_000)
    return head + server_side.mac(server_side.out_key, replay + head + rest) + replay + rest


@pytest.mark.parametrize("with_key", [False, True])
def test_openvpn_reply_parsing_and_hmac(with_key: bool) -> None:
    key = openvpn.TLSAuth(os.urandom(256)) if with_key else None
    sid = os.urandom(8)
    reply = openvpn.parse_reply(_server_reply(sid, key), key)
    assert reply.opcode == 8 and reply.acks == (0,) and reply.remote_session_id == sid
    assert reply.hmac_ok is (True if with_key else None)
    finding = openvpn._judge(_server_reply(sid, key), sid, key)
    assert finding.status == ANSWERED


def test_openvpn_client_hmac_is_what_a_server_would_check() -> None:
    key = openvpn.TLSAuth(os.urandom(256))  # client: key-direction 1
    server = openvpn.TLSAuth(key.key, 0)
    packet = openvpn.client_reset(b"C" * 8, key, now=1_700_000_000)
    digest, replay, rest = packet[9:29], packet[29:37], packet[37:]
    assert hmac.compare_digest(digest, server.mac(server.in_key, replay + packet[:9] + rest))


def test_openvpn_wrong_session_or_opcode_is_not_answered() -> None:
    sid = os.urandom(8)
    assert openvpn._judge(_server_reply(os.urandom(8), None), sid, None).status == INCONCLUSIVE
    assert openvpn._judge(b"HTTP/1.1 400 Bad", sid, None).status == INCONCLUSIVE


def test_tls_auth_key_file_parsing() -> None:
    key = os.urandom(256).hex()
    text = "#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n" + \
        "\n".join(key[i:i + 32] for i in range(0, 512, 32)) + "\n-----END OpenVPN Static key V1-----\n"
    parsed = openvpn.TLSAuth.from_text(text)
    assert parsed.key.hex() == key and parsed.out_key == parsed.key[192:212] and parsed.in_key == parsed.key[64:84]
    with pytest.raises(ValueError, match="256 bytes"):
        openvpn.TLSAuth.from_text("abcd")


# -- WireGuard -------------------------------------------------------------------------------------


def test_wireguard_initiation_layout_and_mac1() -> None:
    from tests.circumvention_servers import wg_keypair

    _, server_public = wg_keypair()
    client_private, _ = wg_keypair()
    hs = wireguard.initiation(wireguard.parse_key(server_public), wireguard.parse_key(client_private),
                              sender_index=0x01020304)
    msg = hs.message
    assert len(msg) == 148 and msg[:4] == b"\x01\x00\x00\x00" and msg[4:8] == b"\x04\x03\x02\x01"
    mac_key = hashlib.blake2s(b"mac1----" + wireguard.parse_key(server_public)).digest()
    assert msg[116:132] == hashlib.blake2s(msg[:116], key=mac_key, digest_size=16).digest()
    assert msg[132:] == b"\x00" * 16  # no cookie: mac2 is zero
    assert not wireguard.verify_response(hs, b"\x02" + b"\x00" * 91)


def test_wireguard_tai64n_is_monotonic_and_labelled() -> None:
    a, b = wireguard.tai64n(1_700_000_000.0), wireguard.tai64n(1_700_000_000.5)
    assert a < b and a[:8] == struct.pack(">Q", 0x400000000000000A + 1_700_000_000)


# -- MTProto ---------------------------------------------------------------------------------------

KEY = bytes(range(16))


@pytest.mark.parametrize(("secret", "mode", "domain"), [
    (KEY.hex(), "plain", None),
    ("dd" + KEY.hex(), "secure", None),
    ("ee" + KEY.hex() + b"example.test".hex(), "fake_tls", "example.test"),
])
def test_mtproto_link_parsing(secret: str, mode: str, domain: str | None) -> None:
    for scheme in ("tg://proxy?", "https://t.me/proxy?"):
        proxy = mtproto.parse_link(f"{scheme}server=198.18.0.9&port=443&secret={secret}")
        assert (proxy.server, proxy.port, proxy.key, proxy.mode, proxy.domain) == ("198.18.0.9", 443, KEY, mode, domain)


def test_mtproto_base64_secret_and_errors() -> None:
    import base64

    raw = b"\xee" + KEY + b"example.test"
    assert mtproto.parse_secret(base64.urlsafe_b64encode(raw).decode().rstrip("="))[1] == "fake_tls"
    with pytest.raises(ValueError, match="lacks"):
        mtproto.parse_link("tg://proxy?server=x&port=1")
    with pytest.raises(ValueError, match="16 bytes"):
        mtproto.parse_secret("abcd")


def test_obfuscated2_header_decrypts_like_a_proxy_does() -> None:
    obf = mtproto.Obfuscated2.client(KEY, mtproto.TAG_SECURE, -3)
    header = obf.header
    dec = Cipher(algorithms.AES(hashlib.sha256(header[8:40] + KEY).digest()), modes.CTR(header[40:56])).decryptor()
    plain = dec.update(header)
    assert plain[56:60] == mtproto.TAG_SECURE and struct.unpack("<h", plain[60:62])[0] == -3
    assert header[0] != 0xEF and header[:4] not in (b"HEAD", b"POST", b"GET ")
    # The stream continues with the same cipher state.
    frame = mtproto.frame(b"x" * 8, "plain")
    assert dec.update(obf.encryptor.update(frame)) == frame


def test_fake_tls_hello_carries_a_verifiable_hmac() -> None:
    hello = mtproto.fake_tls_hello(KEY, "proxy.test", now=1_700_000_000)
    assert len(hello) == 517 and hello[:11] == bytes.fromhex("1603010200010001fc0303")
    digest = hello[11:43]
    expected = hmac.new(KEY, hello[:11] + b"\x00" * 32 + hello[43:], hashlib.sha256).digest()
    xored = bytes(a ^ b for a, b in zip(digest, expected, strict=True))
    assert xored[:28] == b"\x00" * 28 and struct.unpack("<I", xored[28:])[0] == 1_700_000_000
    assert b"proxy.test" in hello


def test_fake_tls_server_hmac() -> None:
    client_random = os.urandom(32)
    answer = bytearray(b"\x16\x03\x03\x00\x30\x02" + os.urandom(90))
    answer[11:43] = b"\x00" * 32
    answer[11:43] = hmac.new(KEY, client_random + bytes(answer), hashlib.sha256).digest()
    assert mtproto.server_hmac_ok(KEY, client_random, bytes(answer))
    assert not mtproto.server_hmac_ok(bytes(16), client_random, bytes(answer))


def test_req_pq_multi_message() -> None:
    nonce = os.urandom(16)
    msg = mtproto.req_pq_multi(nonce, now=1_700_000_000.25)
    assert msg[:8] == b"\x00" * 8 and struct.unpack("<I", msg[16:20])[0] == 20
    assert msg[20:24] == bytes.fromhex("f18e7ebe") and msg[24:] == nonce
    assert struct.unpack("<q", msg[8:16])[0] % 4 == 0


# -- The status rules of _net.run ------------------------------------------------------------------


@pytest.mark.parametrize(("raise_", "silent_by_design", "status", "failure"), [
    (TimeoutError(), None, BLOCKED, failures.GENERIC_TIMEOUT),
    (ConnectionResetError(104, "reset"), None, BLOCKED, failures.CONNECTION_RESET),
    (ValueError("odd"), None, INCONCLUSIVE, None),
    (None, "by design", SILENT, None),
    (None, None, BLOCKED, failures.GENERIC_TIMEOUT),
])
async def test_run_maps_outcomes(ctx: Context, raise_: BaseException | None, silent_by_design: str | None,
                                 status: str, failure: str | None) -> None:
    async def body(s: Session) -> Finding:
        if raise_ is not None:
            raise failures.ProbeError(failures.classify(raise_), "read") if not isinstance(raise_, ValueError) \
                else raise_
        reader = asyncio.StreamReader()
        await s.read_exactly(reader, 1)  # never fed: silence
        return answered("unreachable")

    result = await run("socks5", "tcp", "198.18.0.9", 1080, ctx, target="t", role="target", secret_sha256=None,
                       silent_by_design=silent_by_design, body=body, timeout=0.05)
    assert result.details.status == status
    if failure is not None:
        assert result.failure == failure
    assert result.ok is (status == ANSWERED)


# -- Records and verdict rows ----------------------------------------------------------------------


def _result(status: str, protocol: str = "openvpn", failure: str | None = None, transport: str = "udp") -> Any:
    details = CircumventionDetails(protocol, status, transport, "198.18.0.9", 1194, f"{status} evidence",
                                   secret_hash(b"k"))
    return make_result(details, target="t", role="target", start=0.0, runtime=0.1, failure=failure,
                       failed_operation="read" if failure else None)


def test_record_has_protocol_and_status_and_no_secret() -> None:
    record = check_record(_result(ANSWERED), ProbeMeta(probe_id="p"), "vpn", "circumvention")
    assert record["test_name"] == "circumvention"
    assert record["test_keys"]["protocol"] == "openvpn" and record["test_keys"]["status"] == ANSWERED
    assert record["test_keys"]["secret_sha256"] == hashlib.sha256(b"k").hexdigest()[:16]
    json.dumps(record)


@pytest.mark.parametrize(("statuses", "control_host_ok", "rule", "accessible", "blocking"), [
    ([], None, None, None, None),
    ([ANSWERED], None, "circumvention_answered", True, False),
    ([BLOCKED, ANSWERED], None, "circumvention_answered", True, False),
    ([BLOCKED], None, "circumvention_blocked", False, "circumvention"),
    ([BLOCKED, SILENT], None, "circumvention_blocked", False, "circumvention"),
    ([BLOCKED], False, "circumvention_outage", None, None),
    ([SILENT], None, "circumvention_silent", None, False),
    ([SILENT, INCONCLUSIVE], None, "circumvention_silent", None, False),
    ([INCONCLUSIVE], None, "circumvention_inconclusive", None, None),
])
def test_family_verdict_rows(statuses: list[str], control_host_ok: bool | None, rule: str | None,
                             accessible: bool | None, blocking: object) -> None:
    results = [_result(s, failure=failures.GENERIC_TIMEOUT if s == BLOCKED else None) for s in statuses]
    verdict = family_verdict.decide(results, control_host_ok)
    if rule is None:
        assert verdict is None
        return
    assert verdict is not None
    assert (verdict.rule, verdict.accessible, verdict.blocking) == (rule, accessible, blocking)
    assert verdict.evidence == tuple(r.id for r in results)
    if blocking == "circumvention":
        assert verdict.failure == failures.GENERIC_TIMEOUT


def test_silent_is_never_blocking() -> None:
    for transport in ("udp", "tcp"):
        verdict = family_verdict.decide([_result(SILENT, transport=transport)])
        assert verdict is not None and verdict.blocking is False


# -- Options and secrets ---------------------------------------------------------------------------


def test_validate_options() -> None:
    assert dispatch.validate({"protocol": "openvpn"}) == []
    assert dispatch.validate({"protocol": "ipsec"})[0].startswith("options.protocol must be one of")
    assert dispatch.validate({"protocol": "wireguard"}) == ["options.server_public_key is required for wireguard"]
    assert dispatch.validate({"protocol": "mtproto", "secrets_file": "/x"}) == []


def test_file_values_and_secrets_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("secret-value\n")
    (tmp_path / "s.yaml").write_text("password: hunter2\n")
    merged = dispatch.resolve_options({"protocol": "socks5", "username": f"file:{tmp_path / 'key'}",
                                       "secrets_file": str(tmp_path / "s.yaml")})
    assert merged == {"protocol": "socks5", "username": "secret-value", "password": "hunter2"}


async def test_bad_options_are_inconclusive_and_do_not_leak(ctx: Context, tmp_path: Path) -> None:
    target = Target(name="vpn", service="vpn", category="circumvention", addresses=("198.18.0.9",),
                    ports=(1194,), checks=("circumvention",),
                    options={"protocol": "openvpn", "tls_auth": "not-a-key-but-a-secret"})
    (result,) = await dispatch.measure(target, ctx)
    assert result.details.status == INCONCLUSIVE and "not-a-key-but-a-secret" not in repr(result)
    missing = Target(name="wg", service="vpn", category="circumvention", addresses=("198.18.0.9",),
                     options={"protocol": "wireguard"})
    (result,) = await dispatch.measure(missing, ctx)
    assert result.details.status == INCONCLUSIVE and "server_public_key" in result.details.evidence


def test_tls_crypt_wrap_unwrap() -> None:
    key = openvpn.TLSCrypt(os.urandom(256))
    packet = openvpn.client_reset(b"C" * 8, tls_crypt=key, now=1_700_000_000)
    assert packet[:9] == b"\x38" + b"C" * 8 and len(packet) == 9 + 8 + 32 + 5
    assert key.unwrap(packet, slot=1) == b"\x00" + b"\x00" * 4  # what the server reads
    assert key.unwrap(packet, slot=0) is None  # the other direction's keys do not open it
    tampered = packet[:-1] + bytes([packet[-1] ^ 1])
    assert key.unwrap(tampered, slot=1) is None


# -- A reset noticed while writing reads the same on every loop (issue 14, class 5) ---------------


def _resetting_server() -> tuple[socket.socket, threading.Thread]:
    """Accepts one connection, reads the first packet, answers with an RST (a censor's reset)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _reset_arrived(writer: asyncio.StreamWriter) -> bool:
    """The kernel has the RST (TCP_CLOSE), or the loop already noticed it and closed the socket."""
    sock = writer.get_extra_info("socket")
    try:
        return bool(sock is None or sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7)
    except (OSError, ValueError):  # closed: asyncio's EBADF, uvloop's fd -1
        return True


async def _wait_reset(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, loop_notices: bool) -> None:
    """Until the RST is in the kernel (the loop blocked: it cannot notice) or the loop has seen it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if loop_notices:
            if reader.exception() is not None or reader.at_eof():
                return
            await asyncio.sleep(0.002)
        elif _reset_arrived(writer):
            return
        else:
            time.sleep(0.002)  # noqa: ASYNC251 - blocking on purpose: the loop must not notice the RST


@pytest.mark.parametrize("loop_notices", [False, True], ids=["reset-pending", "reset-seen"])
async def test_a_reset_met_by_the_next_write_is_a_reset_on_every_loop(ctx: Context, loop_notices: bool) -> None:
    """A write after the censor's RST raised, depending on the loop and the timing, the errno,
    ConnectionResetError('Connection lost') (eof_error) or uvloop's RuntimeError (unknown_failure):
    inconclusive. The connection's own error says reset, on every loop."""
    listener, thread = _resetting_server()
    port = listener.getsockname()[1]

    async def body(s: Session) -> Finding:
        reader, writer = await s.connect("127.0.0.1", port)
        await s.send(writer, b"\x05\x01\x00")
        await _wait_reset(writer, reader, loop_notices)
        await s.send(writer, b"\x05\x01\x00\x01")
        return answered("unreachable")

    try:
        result = await run("socks5", "tcp", "127.0.0.1", port, ctx, target="t", role="target",
                           secret_sha256=None, silent_by_design=None, body=body, timeout=1.0)
    finally:
        thread.join(5)
        listener.close()
    assert (result.details.status, result.failure) == (BLOCKED, failures.CONNECTION_RESET), result.details.evidence


async def test_write_error_keeps_an_errno_and_reads_a_bare_one() -> None:
    with_errno = await failures.write_error(BrokenPipeError(32, "broken pipe"), None)
    assert (with_errno.failure, with_errno.operation) == (failures.CONNECTION_RESET, "write")
    reader = asyncio.StreamReader()
    reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
    found = await failures.write_error(ConnectionResetError("Connection lost"), reader)
    assert (found.failure, found.operation) == (failures.CONNECTION_RESET, "read")
    closed = asyncio.StreamReader()
    closed.feed_eof()
    eof = await failures.write_error(RuntimeError("unable to perform operation on <TCPTransport closed=True>"), closed)
    assert (eof.failure, eof.operation) == (failures.EOF_ERROR, "read")
    quiet = await failures.write_error(ConnectionResetError("Connection lost"), asyncio.StreamReader(), wait=0.01)
    assert (quiet.failure, quiet.operation) == (failures.EOF_ERROR, "write")  # no evidence: as before
