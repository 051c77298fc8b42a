"""Injected-RST fingerprint: does an RST look like the server's own packets on the flow?

A censor that injects an RST forges the server's address but not its distance: the IP
TTL left when the packet arrives depends on how many routers it crossed from where it
was sent. So the TTL is the decisive signal (a path does not change within one flow);
the IP ID, window and flags are recorded as supporting evidence (injectors often send
IP ID 0 or a fixed value, window 0, or RST without ACK where the server would send RST+ACK).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from probe.diagnostics._net import Capture, Seen, client_hello, http_request, tcp


@dataclass(frozen=True)
class RSTFinding:
    ttl: int
    ip_id: int
    window: int
    flags: str
    injected: bool
    reasons: tuple[str, ...]
    hops_away: int  # estimated from the initial TTL (64, 128 or 255)
    server_hops_away: int | None


@dataclass(frozen=True)
class RSTDetails:
    kind: str
    address: str
    port: int
    skipped: bool
    rsts: tuple[RSTFinding, ...]
    injected: bool
    server_ttl: int | None
    server_ip_ids: tuple[int, ...]
    baseline: str  # "same_flow" or "other_flow:PORT" or "none"
    note: str = ""


def initial_ttl(ttl: int) -> int:
    return next(t for t in (32, 64, 128, 255) if ttl <= t)


def fingerprint(rsts: Sequence[Seen], server: Sequence[Seen]) -> tuple[RSTFinding, ...]:
    """Judge each RST against the server's non-RST packets (pure)."""
    ttls = sorted({s.ttl for s in server})
    ids = [s.ip_id for s in server]
    windows = {s.window for s in server}
    server_hops = initial_ttl(ttls[0]) - ttls[0] if ttls else None
    out = []
    for r in rsts:
        reasons: list[str] = []
        strong = False
        if ttls and all(abs(r.ttl - t) >= 1 for t in ttls):
            strong = True
            reasons.append(f"ip ttl {r.ttl} where the server's packets arrive with {'/'.join(map(str, ttls))}")
        if ids and all(i == 0 for i in ids) and r.ip_id != 0:
            reasons.append(f"ip id {r.ip_id} where the server sends 0")
        elif ids and any(i != 0 for i in ids) and r.ip_id == 0:
            reasons.append("ip id 0 where the server's are non-zero")
        if windows and r.window not in windows and r.window != 0 and "A" in r.flags:
            reasons.append(f"window {r.window} unlike the server's {sorted(windows)}")
        out.append(RSTFinding(r.ttl, r.ip_id, r.window, r.flags, strong, tuple(reasons),
                              initial_ttl(r.ttl) - r.ttl, server_hops))
    return tuple(out)


def _server_packets(flow: Sequence[Seen], address: str) -> tuple[list[Seen], list[Seen]]:
    mine = [s for s in flow if s.proto == "tcp" and s.src == address]
    return [s for s in mine if "R" in s.flags], [s for s in mine if "R" not in s.flags]


def run_rst(address: str, port: int, sni: str | None, wait: float, baseline_port: int) -> RSTDetails:
    """Open a flow, send the ClientHello (HTTP request on 80), keep every packet; compare RSTs."""
    note = ""
    with Capture(address) as cap:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("0.0.0.0", 0))  # noqa: S104 - an ephemeral client port, known before connect
            local = sock.getsockname()[1]
            sock.settimeout(max(wait, 2.0))
            sock.connect((address, port))
            sock.settimeout(wait)
            name = sni or address
            sock.sendall(http_request(name) if port == 80 else client_hello(name))
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    break
        except ConnectionRefusedError:
            note = "connection refused"
        except ConnectionResetError:
            note = "connection reset"
        except OSError as exc:
            note = exc.strerror or type(exc).__name__
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        time.sleep(0.05)
        flow = cap.flow(local, port)
        rsts, server = _server_packets(flow, address)
        baseline = "same_flow" if server else "none"
        if not server and baseline_port != port:
            try:
                with tcp(address, baseline_port, timeout=max(wait, 2.0)) as sock:
                    other = sock.getsockname()[1]
                    time.sleep(0.05)
                server = _server_packets(cap.flow(other, baseline_port), address)[1]
                baseline = f"other_flow:{baseline_port}" if server else "none"
            except OSError:
                pass
    findings = fingerprint(rsts, server)
    return RSTDetails("rst", address, port, False, findings, any(f.injected for f in findings),
                      min((s.ttl for s in server), default=None), tuple(s.ip_id for s in server[:8]), baseline, note)

