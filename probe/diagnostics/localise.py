"""Censor localisation with TTL-limited probes, in the manner of CenTrace and the 2021 Twitter study.

Blocking (RST, drop, block page): for each TTL, a fresh kernel TCP connection is made at
full TTL, then ``IP_TTL`` is set on that socket and the ClientHello (or HTTP request) is
sent. Below the censor the packet expires and a router answers ICMP time-exceeded; from
the censor on, the censor reacts (an RST, silence where the control SNI still gets ICMP,
a block page). The sweep runs with a control SNI first, which also finds how far the
server is, then with the target SNI.

Throttling: a throttler does not drop the ClientHello, it slows the flow afterwards. As
in the Twitter study, a *trigger* ClientHello carrying the target SNI is sent with a low
TTL (crafted with scapy at the flow's own sequence numbers, so it never reaches the
server); the connection then does a normal TLS handshake with the control SNI and
downloads. The flow is slow only when the trigger passed the throttler.

``censor_hop`` is ``reacting TTL - 1``: the number of routers the packet had passed when
the censor saw it. A censor in router k's forwarding path sees a packet only if router k
forwards it, i.e. at TTL k+1, and is reported as hop k (docs/diagnostics.md).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from probe.analysis import blockpages
from probe.diagnostics import Options
from probe.diagnostics._net import ICMP_TIME_EXCEEDED, Capture, Seen, client_hello, http_request, tcp

REACTIONS: Final = ("rst", "drop", "blockpage", "throttle")
PASSED: Final = ("icmp", "response")
MIN_THROTTLED_SECONDS: Final = 0.25  # a slower transfer shorter than this is scheduling noise, not a policer


@dataclass(frozen=True)
class Hop:
    """What one TTL-limited probe saw."""

    ttl: int
    outcome: str  # icmp | rst | response | blockpage | silence | closed | connect_failed
    icmp_from: str | None = None
    rst_ttl: int | None = None
    note: str = ""


@dataclass(frozen=True)
class ThrottleProbe:
    ttl: int
    trigger_sni: str
    kbit_s: float | None
    received: int
    seconds: float
    icmp_from: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Location:
    """Where the censor reacted, decided from the two sweeps (pure)."""

    found: bool
    reaction: str | None = None  # one of REACTIONS
    censor_hop: int | None = None
    reacting_ttl: int | None = None
    server_ttl: int | None = None  # TTL at which the control SNI reached the server
    sni_specific: bool | None = None  # False: the control SNI met the same reaction
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocaliseDetails:
    kind: str
    address: str
    port: int
    protocol: str  # tls | http
    sni: str
    control_sni: str
    skipped: bool
    location: Location
    target_hops: tuple[Hop, ...] = ()
    control_hops: tuple[Hop, ...] = ()
    throttle_probes: tuple[ThrottleProbe, ...] = ()
    icmp_sources: dict[str, str] = field(default_factory=dict)  # ttl -> router address
    probes: int = 0


# -- pure decisions ---------------------------------------------------------------------------------


def response_outcome(data: bytes, protocol: str) -> str:
    """``blockpage`` for an HTTP answer that matches a fingerprint or is 451, else ``response``."""
    if protocol != "http" or not data.startswith(b"HTTP/"):
        return "response"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1] if len(lines[0].split()) > 1 else ""
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    text = body[: blockpages.SCAN_BYTES].decode("utf-8", "replace")
    title = blockpages.page_title(body)  # linear: a backtracking regex took seconds on hostile pages
    if status == "451" or blockpages.match(text, title, headers.get("location"), headers):
        return "blockpage"
    return "response"


def locate(target: Sequence[Hop], control: Sequence[Hop]) -> Location:
    """The first TTL at which the target SNI meets a reaction the control SNI does not."""
    by_ttl = {h.ttl: h for h in control}
    server_ttl = next((h.ttl for h in sorted(control, key=lambda h: h.ttl) if h.outcome == "response"), None)
    hops = sorted(target, key=lambda h: h.ttl)
    for i, hop in enumerate(hops):
        other = by_ttl.get(hop.ttl)
        reaction: str | None = None
        if hop.outcome in ("rst", "blockpage"):
            reaction = hop.outcome
        elif hop.outcome in ("silence", "closed") and other is not None and other.outcome in PASSED:
            if any(later.outcome in PASSED for later in hops[i + 1:]):
                continue  # a lost packet, not a censor: a later TTL got through
            reaction = "drop"
        if reaction is None:
            continue
        specific = not (other is not None and other.outcome == hop.outcome)
        evidence = [f"ttl {h.ttl}: {h.outcome}" + (f" from {h.icmp_from}" if h.icmp_from else "")
                    + (f" (rst ttl {h.rst_ttl})" if h.rst_ttl is not None else "") for h in hops[: i + 1]]
        if other is not None:
            evidence.append(f"control sni at ttl {hop.ttl}: {other.outcome}"
                            + (f" from {other.icmp_from}" if other.icmp_from else ""))
        return Location(True, reaction, hop.ttl - 1, hop.ttl, server_ttl, specific, tuple(evidence))
    return Location(False, server_ttl=server_ttl)


def throttled(probe: ThrottleProbe, control: ThrottleProbe, ratio: float) -> bool:
    """Slower than the control-triggered flow by ``ratio`` (an unfinished download counts by its rate)."""
    if control.kbit_s is None or control.kbit_s <= 0:
        return False
    if probe.kbit_s is None:
        return True
    return probe.kbit_s * ratio < control.kbit_s and probe.seconds >= MIN_THROTTLED_SECONDS


def locate_throttle(probes: Sequence[ThrottleProbe], control: ThrottleProbe, ratio: float,
                    server_ttl: int | None) -> Location:
    for p in sorted(probes, key=lambda p: p.ttl):
        if throttled(p, control, ratio):
            evidence = (f"trigger {p.trigger_sni!r} at ttl {p.ttl}: {p.kbit_s or 0:.0f} kbit/s",
                        f"control trigger {control.trigger_sni!r} at ttl {control.ttl}: {control.kbit_s or 0:.0f} "
                        "kbit/s", *(f"trigger at ttl {q.ttl}: {q.kbit_s or 0:.0f} kbit/s, not throttled"
                                    for q in probes if q.ttl < p.ttl))
            return Location(True, "throttle", p.ttl - 1, p.ttl, server_ttl, True, evidence)
    return Location(False, server_ttl=server_ttl)


# -- the probes (blocking I/O; run in a thread) ---------------------------------------------------------


class Budget:
    """Counts TCP connections against ``diag_max_probes``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


def _probe(cap: Capture, address: str, port: int, payload: bytes, ttl: int, wait: float, protocol: str) -> Hop:
    try:
        conn = tcp(address, port, timeout=max(wait, 2.0))
        sock = conn.__enter__()
    except OSError as exc:
        return Hop(ttl, "connect_failed", note=exc.strerror or type(exc).__name__)
    try:
        local = sock.getsockname()[1]
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.setblocking(False)
        sock.send(payload)
        deadline, data, outcome = time.monotonic() + wait, b"", "silence"
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    outcome = "rst"
                    break
                except OSError:
                    continue  # a soft error (ICMP) reported on the socket
                if not chunk:
                    outcome = "closed" if not data else response_outcome(data, protocol)
                    break
                data += chunk
                if protocol == "tls" or len(data) > 65536:
                    outcome = response_outcome(data, protocol)
                    break
                deadline = min(deadline, time.monotonic() + 0.3)  # HTTP: the rest of the answer
                outcome = response_outcome(data, protocol)
            flow = cap.flow(local, port)
            if any(s.proto == "icmp" for s in flow) or any("R" in s.flags and s.src == address for s in flow):
                time.sleep(0.02)
                break
        time.sleep(0.01)
        flow = cap.flow(local, port)
        icmp = next((s for s in flow if s.proto == "icmp" and s.icmp_type == ICMP_TIME_EXCEEDED), None)
        rst = next((s for s in flow if s.proto == "tcp" and "R" in s.flags and s.src == address), None)
        if rst is not None and outcome in ("silence", "closed"):
            outcome = "rst"
        if icmp is not None and outcome == "silence":
            outcome = "icmp"
        other_icmp = next((s for s in flow if s.proto == "icmp" and s.icmp_type != ICMP_TIME_EXCEEDED), None)
        note = f"icmp type {other_icmp.icmp_type} code {other_icmp.icmp_code} from {other_icmp.src}" \
            if other_icmp else ""
        return Hop(ttl, outcome, icmp.src if icmp else None, rst.ttl if rst else None, note)
    finally:
        conn.__exit__(None, None, None)


def sweep(cap: Capture, address: str, port: int, payload: bytes, ttls: range, wait: float, protocol: str,
          budget: Budget, stop: Callable[[list[Hop]], bool]) -> list[Hop]:
    hops: list[Hop] = []
    for ttl in ttls:
        if not budget.take():
            break
        hop = _probe(cap, address, port, payload, ttl, wait, protocol)
        if hop.outcome == "silence" and budget.take():  # routers rate-limit ICMP: ask once more before judging
            hop = _probe(cap, address, port, payload, ttl, wait, protocol)
        hops.append(hop)
        if stop(hops):
            break
    return hops


def _control_done(hops: list[Hop]) -> bool:
    return hops[-1].outcome in ("response", "rst", "blockpage", "connect_failed")


def _target_done(hops: list[Hop]) -> bool:
    last = hops[-1].outcome
    if last in ("response", "rst", "blockpage", "connect_failed"):
        return True
    quiet = [h.outcome in ("silence", "closed") for h in hops[-2:]]
    return len(quiet) == 2 and all(quiet)  # two quiet TTLs in a row: a drop, confirmed


def throttle_probe(cap: Capture, address: str, port: int, trigger_sni: str, control_sni: str, ttl: int,
                   path: str, timeout: float) -> ThrottleProbe:
    """Trigger with ``trigger_sni`` at ``ttl`` (never reaches the server), then download with the control SNI."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.sendrecv import send

    try:
        conn = tcp(address, port, timeout=timeout)
        sock = conn.__enter__()
    except OSError as exc:
        return ThrottleProbe(ttl, trigger_sni, None, 0, 0.0, note=f"connect: {exc.strerror or exc}")
    try:
        local = sock.getsockname()[1]
        ack: Seen | None = None
        for _ in range(100):
            ack = next((s for s in cap.flow(local, port) if s.dst == address and s.flags == "A"), None)
            if ack:
                break
            time.sleep(0.01)
        if ack is None:
            return ThrottleProbe(ttl, trigger_sni, None, 0, 0.0, note="handshake ACK not captured")
        send(IP(dst=address, ttl=ttl) / TCP(sport=local, dport=port, flags="PA", seq=ack.seq, ack=ack.ack,
                                            window=ack.window) / Raw(client_hello(trigger_sni)), verbose=False)
        for _ in range(25):
            if any(s.proto == "icmp" for s in cap.flow(local, port)):
                break
            time.sleep(0.01)
        icmp = next((s.src for s in cap.flow(local, port) if s.proto == "icmp"), None)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock.settimeout(timeout)
        received, start = 0, time.monotonic()
        try:
            with context.wrap_socket(sock, server_hostname=control_sni, do_handshake_on_connect=True) as tls:
                start = time.monotonic()
                tls.sendall(http_request(control_sni, path))
                deadline = start + timeout
                while time.monotonic() < deadline and received < (1 << 20):
                    tls.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    received += len(chunk)
                note = ""
        except (OSError, ssl.SSLError) as exc:
            note = f"{type(exc).__name__}: {exc}"[:200]
        seconds = max(time.monotonic() - start, 1e-6)
        rate = received * 8 / 1000 / seconds if received else None
        return ThrottleProbe(ttl, trigger_sni, rate, received, round(seconds, 4), icmp, note)
    finally:
        conn.__exit__(None, None, None)


def run_localise(address: str, port: int, sni: str, control_sni: str, opts: Options, budget: Budget,
                 protocol: str | None = None) -> LocaliseDetails:
    """Both sweeps (and the throttle sweep when nothing blocks outright); raises OSError without raw sockets."""
    protocol = protocol or ("http" if port == 80 else "tls")
    make = (lambda name: http_request(name)) if protocol == "http" else client_hello
    ttls = range(opts.min_ttl, opts.max_ttl + 1)
    throttle: list[ThrottleProbe] = []
    with Capture(address) as cap:
        control = sweep(cap, address, port, make(control_sni), ttls, opts.wait, protocol, budget, _control_done)
        server_ttl = next((h.ttl for h in control if h.outcome == "response"), None)
        top = min(opts.max_ttl, server_ttl + 1) if server_ttl else opts.max_ttl
        target = sweep(cap, address, port, make(sni), range(opts.min_ttl, top + 1), opts.wait, protocol, budget,
                       _target_done)
        location = locate(target, control)
        if (not location.found and protocol == "tls" and opts.throttle == "auto" and server_ttl
                and server_ttl - 1 >= opts.min_ttl and budget.limit - budget.used >= 2):
            timeout = max(3.0, opts.wait * 3)
            last = server_ttl - 1
            budget.used += 2
            base = throttle_probe(cap, address, port, control_sni, control_sni, last, opts.throttle_path, timeout)
            top_probe = throttle_probe(cap, address, port, sni, control_sni, last, opts.throttle_path, timeout)
            throttle = [base, top_probe]
            if throttled(top_probe, base, opts.throttle_ratio):
                probes = [top_probe]
                for ttl in range(opts.min_ttl, last):
                    if not budget.take():
                        break
                    probe = throttle_probe(cap, address, port, sni, control_sni, ttl, opts.throttle_path, timeout)
                    throttle.append(probe)
                    probes.append(probe)
                    if throttled(probe, base, opts.throttle_ratio) and budget.take():  # confirm once
                        again = throttle_probe(cap, address, port, sni, control_sni, ttl, opts.throttle_path, timeout)
                        throttle.append(again)
                        if throttled(again, base, opts.throttle_ratio):
                            break
                        probes[-1] = again
                location = locate_throttle(probes, base, opts.throttle_ratio, server_ttl)
    sources = {str(h.ttl): h.icmp_from for h in (*control, *target) if h.icmp_from}
    return LocaliseDetails("localise", address, port, protocol, sni, control_sni, False, location,
                           tuple(target), tuple(control), tuple(throttle), dict(sorted(sources.items(),
                                                                                      key=lambda kv: int(kv[0]))),
                           budget.used)

