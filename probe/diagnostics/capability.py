"""Can this process send and sniff raw packets? If not, say why, so the check records a skip.

The diagnostics need two things a normal user lacks: an ``AF_INET/SOCK_RAW`` socket
(scapy's ``send``: the TTL-limited trigger) and an ``AF_PACKET`` socket (scapy's sniffer:
ICMP time-exceeded and RSTs the kernel would otherwise swallow). Both need CAP_NET_RAW.
Asking the kernel directly is the only honest test: a capability set can be dropped from
the bounding set, or a seccomp/AppArmor profile can refuse it, while the uid is still 0.
"""

from __future__ import annotations

import socket


def raw_unavailable() -> str | None:
    """None when raw sockets work here; otherwise the reason, fit for a record."""
    probes = (
        ("raw IP socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
        ("packet socket", getattr(socket, "AF_PACKET", -1), socket.SOCK_RAW, 0x0300),  # ETH_P_ALL, host order
    )
    for what, family, kind, proto in probes:
        if family == -1:
            return f"{what}: AF_PACKET is not available on this system (Linux only)"
        try:
            sock = socket.socket(family, kind, proto)
        except PermissionError as exc:
            return f"{what}: {exc.strerror or exc} (needs CAP_NET_RAW; run as root or grant the capability)"
        except OSError as exc:
            return f"{what}: {exc.strerror or exc}"
        sock.close()
    return None
