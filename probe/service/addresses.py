"""Where the probe learns its own addresses (I/O), and the log filter that scrubs them.

``interface_addresses`` lists every address of every interface in the probe's network namespace,
both families: on Linux from ``/proc/net/fib_trie`` (IPv4 "host LOCAL" entries, secondary
addresses included) and ``/proc/net/if_inet6``; elsewhere, or if those cannot be read, from
``SIOCGIFADDR`` on each interface and the host name's addresses. The pure part, matching and
replacing them, is ``probe.core.privacy``; the choke point where records are scrubbed is
``probe.pipeline.TargetOutcome.records``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

from probe.core.privacy import AddressBook, scrub_text, scrub_value

_SIOCGIFADDR = 0x8915
_IFREQ = 40
_LOCAL = "/32 host LOCAL"


def _fib_trie(text: str) -> set[str]:
    """IPv4 addresses of this host: the ``|-- A.B.C.D`` line before each ``/32 host LOCAL``."""
    found: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped == _LOCAL and last:
            found.add(last)
    return found


def _if_inet6(text: str) -> set[str]:
    """IPv6 addresses from ``/proc/net/if_inet6`` (32 hex digits, then index, prefix, scope, flags, name)."""
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:  # noqa: PLR2004
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return found


def _ioctl_addresses() -> set[str]:
    """Fallback: each interface's primary IPv4 address, and what the host name resolves to."""
    found: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                request = struct.pack("256s", name.encode()[:15])
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                found.add(socket.inet_ntoa(reply[20:24]))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    return found


def interface_addresses(proc: Path = Path("/proc/net")) -> list[str]:
    """Every local address of this network namespace (loopback ones included; the book skips them)."""
    found: set[str] = set()
    try:
        found |= _fib_trie((proc / "fib_trie").read_text())
    except OSError:
        found |= _ioctl_addresses()
    with contextlib.suppress(OSError):
        found |= _if_inet6((proc / "if_inet6").read_text())
    return sorted(found)


def address_book() -> AddressBook:
    """The probe's book: interface addresses, rediscovered every 30 s."""
    return AddressBook(discover=interface_addresses)


class ScrubFilter(logging.Filter):
    """Scrubs the probe's own addresses from a log record: message, arguments, ``fields``, traceback."""

    def __init__(self, book: AddressBook) -> None:
        super().__init__()
        self.book = book
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        own = self.book.current()
        if not own:
            return True
        record.msg, _ = scrub_text(record.getMessage(), own)
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = scrub_value(fields, own)[0]
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text, own)[0]
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info, own)[0]
        return True


def scrub_logs(book: AddressBook, loggers: Iterable[str] = ("", "probe")) -> ScrubFilter:
    """Install a :class:`ScrubFilter` on every handler of these loggers (a handler filter sees every
    record it writes, also those propagated from child loggers); idempotent per handler."""
    installed = ScrubFilter(book)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, ScrubFilter)]:
                handler.removeFilter(old)
            handler.addFilter(installed)
    return installed
