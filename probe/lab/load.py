"""Background processes for the lab's benign link conditions: cross traffic and a changing link rate.

Run: ``python -m probe.lab.load KIND STATE_DIR [ARGS...]`` (the techniques in
:mod:`probe.lab.techniques` start them with ``Lab.spawn`` and kill them on removal). Both are
bounded in time by their own ``seconds`` argument as well, so a crashed lab leaves nothing running.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

CROSS_BYTES = 4 * 1024 * 1024  # one cross-traffic download; a new one starts when it ends
CROSS_READY = 64 * 1024  # bytes received before the transfer counts as saturating the link


def cross_traffic(state: Path, address: str, host: str, seconds: float) -> None:
    """Download ``https://host/large`` from ``address`` over and over for ``seconds``: a flow saturating the link.

    Writes ``cross-<address>.ready`` once the first transfer has received CROSS_READY bytes.
    """
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    ready = state / f"cross-{address}.ready"
    end = time.monotonic() + seconds
    request = f"GET /large?bytes={CROSS_BYTES} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < end:
        try:
            with socket.create_connection((address, 443), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(request)
                received = 0
                while time.monotonic() < end:
                    data = tls.recv(65536)
                    if not data:
                        break
                    received += len(data)
                    if received >= CROSS_READY and not ready.exists():
                        ready.write_text("ok")
        except OSError:
            time.sleep(0.2)  # the lab is being torn down or the link is saturated: try again, bounded by `end`


def changing_rate(state: Path, ifaces: list[str], rates_kbit: list[float], period: float, seconds: float) -> None:
    """Every ``period`` seconds, set the link class (htb 1:1 and its leaf 1:2) to the next rate, for ``seconds``."""
    end = time.monotonic() + seconds
    step = 0
    (state / "lte.ready").write_text("ok")
    while time.monotonic() < end:
        time.sleep(min(period, max(0.0, end - time.monotonic())))
        step += 1
        rate = rates_kbit[step % len(rates_kbit)]
        for iface in ifaces:
            for classid in ("1:1", "1:2"):
                subprocess.run(["tc", "class", "change", "dev", iface, "classid", classid, "htb", *link_args(rate)],
                               check=False, capture_output=True, timeout=10)


def link_args(rate_kbit: float) -> list[str]:
    """htb arguments of an access link at ``rate_kbit`` (bursts of ~20 ms, at least 16 kB)."""
    burst = str(max(16000, int(rate_kbit * 1000 / 8 / 50)))
    return ["rate", f"{rate_kbit}kbit", "ceil", f"{rate_kbit}kbit", "burst", burst, "cburst", burst,
            "quantum", "1514"]


def main(argv: list[str]) -> None:
    kind, state = argv[0], Path(argv[1])
    if kind == "cross":
        cross_traffic(state, argv[2], argv[3], float(argv[4]))
    elif kind == "lte":
        changing_rate(state, argv[2].split(","), [float(r) for r in argv[3].split(",")], float(argv[4]),
                      float(argv[5]))
    else:
        raise SystemExit(f"unknown load process {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
