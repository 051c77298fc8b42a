"""Tor reachability, as OONI's ``tor`` and ``vanilla_tor`` experiments measure it, minus Tor itself.

- OR port: a TLS handshake (Tor relays use self-signed link certificates, so the
  handshake is unverified), then a VERSIONS cell; a VERSIONS cell back shows a Tor
  relay, not just any TLS server.
- Dir port: ``GET /tor/status-vote/current/consensus``; a ``network-status-version``
  body is the consensus. A relay without one (a private relay, a bridge) still serves
  its own descriptor at ``/tor/server/authority``, which is asked next.
- obfs4 bridge (``cert=``, ``iat-mode=``): the obfs4 handshake (ntor over Elligator2-
  encoded keys) is run by the ``obfs4proxy`` binary as a pluggable-transport client,
  like Tor Browser does; this check connects through its SOCKS5 port with the bridge
  arguments and reads the reply, which obfs4proxy sends only after the obfs4
  handshake completed (or failed). Then a VERSIONS cell goes through the tunnel.
  An obfs4 bridge never answers a client with the wrong ``cert``: silence after a
  working TCP connect is ``silent``, never blocked. A direct TCP connect is made
  first, so that a dropped or reset connect is still seen as ``blocked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import tempfile
from typing import Final

from probe.circumvention import BLOCKED, INCONCLUSIVE, CircumventionDetails, secret_hash
from probe.circumvention._net import Finding, Session, answered, run, unexpected
from probe.circumvention.proxies import socks5_connect, socks5_handshake
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role

CELL_VERSIONS: Final = 7
LINK_VERSIONS: Final = (3, 4, 5)
MAX_BODY: Final = 8 * 1024 * 1024
SILENT_OBFS4: Final = "an obfs4 bridge ignores clients without its cert"


def versions_cell() -> bytes:
    payload = b"".join(struct.pack(">H", v) for v in LINK_VERSIONS)
    return struct.pack(">HBH", 0, CELL_VERSIONS, len(payload)) + payload


async def _versions(s: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, ...]:
    await s.send(writer, versions_cell())
    head = await s.read_exactly(reader, 5, phase="versions")
    circ, cmd, length = struct.unpack(">HBH", head)
    if cmd != CELL_VERSIONS or circ != 0 or length % 2:
        raise unexpected("the first cell is not VERSIONS", first_bytes=head.hex())
    body = await s.read_exactly(reader, length, phase="versions")
    return struct.unpack(f">{length // 2}H", body)


async def check_tor_or(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target", timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    async def body(s: Session) -> Finding:
        reader, writer = await s.connect(address, port)
        t0 = ctx.monotonic()
        try:
            await asyncio.wait_for(writer.start_tls(ctx.ssl_context(verify=False), server_hostname=None,
                                                    ssl_handshake_timeout=s.timeout), s.timeout)
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), "tls_handshake", str(exc)) from exc
        finally:
            s.timings["tls_handshake"] = ctx.monotonic() - t0
        versions = await _versions(s, reader, writer)
        return answered(f"TLS handshake, then a VERSIONS cell offering {list(versions)}: a Tor relay",
                        link_versions=list(versions))

    return await run("tor_or", "tcp", address, port, ctx, target=target, role=role, secret_sha256=None,
                     silent_by_design=None, body=body, timeout=timeout)


async def _get(s: Session, address: str, port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await s.connect(address, port)
    await s.send(writer, f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
    line = await s.read_line(reader)
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise unexpected("the directory port's reply is not HTTP", first_bytes=line[:8].hex())
    for _ in range(64):
        if (await s.read_line(reader)).strip() == b"":
            break
    body = bytearray()  # appending to bytes copies it whole each time: quadratic on the loop
    t0 = ctx_time = asyncio.get_running_loop().time()
    while len(body) < MAX_BODY and ctx_time - t0 < 4 * s.timeout:
        chunk = await asyncio.wait_for(reader.read(65536), s.timeout)
        if not chunk:
            break
        body += chunk
        ctx_time = asyncio.get_running_loop().time()
    writer.close()
    return int(parts[1]), bytes(body)


async def check_tor_dir(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target", timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    async def body(s: Session) -> Finding:
        status, text = await _get(s, address, port, "/tor/status-vote/current/consensus")
        if status == 200 and text.startswith(b"network-status-version"):
            return answered(f"the consensus ({len(text)} bytes)", consensus=True, consensus_bytes=len(text))
        status2, text2 = await _get(s, address, port, "/tor/server/authority")
        if status2 == 200 and text2.startswith(b"router "):
            return answered(f"no consensus (HTTP {status}), but the relay's own descriptor: a Tor directory port",
                            consensus=False, consensus_status=status)
        return unexpected(f"HTTP {status} for the consensus and {status2} for the descriptor", status=status)

    return await run("tor_dir", "tcp", address, port, ctx, target=target, role=role, secret_sha256=None,
                     silent_by_design=None, body=body, timeout=timeout)


def pt_args(cert: str, iat_mode: int) -> tuple[bytes, bytes]:
    """Bridge arguments as pluggable-transport SOCKS credentials (pt-spec 3.5)."""
    args = f"cert={cert};iat-mode={iat_mode}".encode()
    return (args, b"\x00") if len(args) <= 255 else (args[:255], args[255:])


async def _start_obfs4proxy(binary: str, state: str, wait: float) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "TOR_PT_MANAGED_TRANSPORT_VER": "1", "TOR_PT_STATE_LOCATION": state,
           "TOR_PT_CLIENT_TRANSPORTS": "obfs4", "TOR_PT_EXIT_ON_STDIN_CLOSE": "1"}
    proc = await asyncio.create_subprocess_exec(
        binary, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    for _ in range(32):  # a handful of lines, bounded
        line = (await asyncio.wait_for(proc.stdout.readline(), wait)).decode(errors="replace").split()
        if line[:3] == ["CMETHOD", "obfs4", "socks5"]:
            return proc, int(line[3].rpartition(":")[2])
        if not line or line[0] in ("CMETHOD-ERROR", "ENV-ERROR", "VERSION-ERROR"):
            break
    raise RuntimeError("obfs4proxy did not offer an obfs4 SOCKS5 port")


def _stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def check_obfs4(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target", cert: str,
    iat_mode: int = 0, obfs4proxy: str = "obfs4proxy", timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """Direct TCP connect, then the obfs4 handshake through obfs4proxy, then a VERSIONS cell."""
    binary = shutil.which(obfs4proxy)

    async def body(s: Session) -> Finding:
        if binary is None:
            return Finding(INCONCLUSIVE, f"{obfs4proxy} is not installed: no obfs4 handshake possible",
                           failure=f"{failures.UNKNOWN_PREFIX}: obfs4proxy missing", operation="connect")
        _, direct = await s.connect(address, port)
        direct.close()
        with tempfile.TemporaryDirectory(prefix="probe-obfs4-") as state:
            try:
                proc, socks_port = await _start_obfs4proxy(binary, state, s.timeout)
            except Exception as exc:  # noqa: BLE001 - a local problem, not the network's
                return Finding(INCONCLUSIVE, f"obfs4proxy failed to start ({type(exc).__name__})",
                               failure=f"{failures.UNKNOWN_PREFIX}: obfs4proxy failed", operation="connect")
            try:
                reader, writer = await s.connect("127.0.0.1", socks_port)
                user, pw = pt_args(cert, iat_mode)
                await socks5_handshake(s, reader, writer, username=user.decode(), password=pw.decode())
                code = await socks5_connect(s, reader, writer, address, port)
                if code != 0:
                    # obfs4proxy saw the connection fail (reset or closed) during the handshake.
                    return Finding(BLOCKED, f"the obfs4 handshake failed (SOCKS reply {code}) after TCP connected",
                                   failure=failures.CONNECTION_RESET, operation="read", info={"socks_reply": code})
                s.info["obfs4_handshake"] = True
                t0 = ctx.monotonic()
                await asyncio.wait_for(writer.start_tls(ctx.ssl_context(verify=False), server_hostname=None,
                                                        ssl_handshake_timeout=s.timeout), s.timeout)
                s.timings["tls_handshake"] = ctx.monotonic() - t0
                versions = await _versions(s, reader, writer)
                return answered(f"obfs4 handshake, then TLS and a VERSIONS cell {list(versions)} through it",
                                link_versions=list(versions))
            finally:
                _stop(proc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 2)

    return await run("obfs4", "tcp", address, port, ctx, target=target, role=role, secret_sha256=secret_hash(cert),
                     silent_by_design=SILENT_OBFS4, body=body, timeout=timeout)
