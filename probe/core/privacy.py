"""The volunteer's own addresses, and scrubbing them from records before anything keeps them.

A page that says "Your IP address is …", a ``Set-Cookie`` or ``X-Forwarded-For`` that echoes
the client, a resolver that answers with the client's own address: a measurement can carry the
volunteer's address in any field. As OONI's probe does, every record is scrubbed before it is
stored, exported, printed or uploaded: each occurrence of one of the probe's own addresses, in
any string at any depth (keys too), becomes ``[scrubbed]``, and ``test_keys.scrubbed`` counts
the replacements (absent when nothing was scrubbed).

What is scrubbed (docs/records.md, "Privacy"):

- an IPv4 address equal to one of ours, in any textual form a page or header uses: dotted
  (also zero-padded octets), dashed as in reverse-DNS names (``198-18-0-2.dyn.example``),
  inside URLs, with a port, IPv4-mapped IPv6 (``::ffff:198.18.0.2``);
- an IPv6 address in the same ``/64`` as one of ours (compressed or expanded, in brackets,
  with ``%3A`` for ``:`` as in cookies and query strings): the interface id may be a
  privacy-randomised one that changes daily, the prefix is what names the subscriber. Other
  hosts of that ``/64`` are the volunteer's own network, so they identify the volunteer too.
  Link-local addresses (``fe80::/64`` is everyone's) are matched exactly.
- never a range of other hosts: a target's address next to ours in the same IPv4 subnet is
  evidence, and stays. Loopback and unspecified addresses are not the volunteer's.

Not recognised: integer or hex spellings of an address, reversed ``in-addr.arpa`` names.

This module is pure except :class:`AddressBook`, the thread-safe set of addresses learned so far,
which calls an injected ``discover`` function (the I/O lives in ``probe.service.addresses``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCRUBBED = "[scrubbed]"
#: ``test_keys`` key counting the replacements made in a record (present only when > 0).
SCRUBBED_KEY = "scrubbed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_V6_PREFIX = 64

_HEX = r"[0-9A-Fa-f]"
_SEP = r"(?::|%3[Aa])"
_V4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_CANDIDATE = re.compile(
    rf"(?P<v6>(?<![0-9A-Za-z:.%])(?:{_HEX}{{0,4}}{_SEP}){{2,8}}(?:{_V4}(?![0-9])|{_HEX}{{1,4}})?)"
    rf"|(?P<v4>(?<![0-9])(?<![0-9]\.){_V4}(?![0-9])(?!\.[0-9]))"
    r"|(?P<dash>(?<![0-9A-Za-z-])\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}(?![0-9A-Za-z]))"
)

_TRAILING_SEP = re.compile(rf"{_SEP}+$")
#: A quick test that a string may hold an address in one of the forms above (most strings do not).
_MAYBE_ADDRESS = re.compile(r"\d{1,3}[.-]\d{1,3}[.-]\d|:[0-9A-Fa-f]{0,4}:|%3[Aa]")


@dataclass(frozen=True)
class OwnAddresses:
    """The probe's own addresses, as :func:`scrub_text` matches them."""

    exact: frozenset[IPAddress] = frozenset()
    prefixes: frozenset[ipaddress.IPv6Network] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.exact)

    def mine(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address in self.exact:
            return True
        return isinstance(address, ipaddress.IPv6Address) and any(address in p for p in self.prefixes)


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """An address from its text (``%zone`` dropped), or None; IPv4 octets may be zero-padded."""
    text = text.split("%", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):  # noqa: PLR2004
        return ipaddress.IPv4Address(".".join(str(int(p)) for p in parts))
    return None


def own_addresses(addresses: Iterable[str]) -> OwnAddresses:
    """The set to scrub, from address texts; loopback, unspecified and unparsable ones are skipped."""
    exact: set[IPAddress] = set()
    prefixes: set[ipaddress.IPv6Network] = set()
    for text in addresses:
        address = parse_address(text)
        if address is None:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            continue
        exact.add(address)
        if isinstance(address, ipaddress.IPv6Address) and not address.is_link_local:
            prefixes.add(ipaddress.IPv6Network((address, _V6_PREFIX), strict=False))
    return OwnAddresses(frozenset(exact), frozenset(prefixes))


def _replacement(found: re.Match[str], own: OwnAddresses) -> str | None:
    """``[scrubbed]`` (plus what followed the address in the match) when the match is ours, else None."""
    text = found.group(0)
    if found.group("dash") is not None:
        address = parse_address(text.replace("-", "."))
        return SCRUBBED if address is not None and own.mine(address) else None
    if found.group("v6") is None:
        address = parse_address(text)
        return SCRUBBED if address is not None and own.mine(address) else None
    text = re.sub("%3[Aa]", ":", text)
    trailing = _TRAILING_SEP.search(found.group(0))
    rest = trailing.group(0) if trailing else ""
    for candidate, kept in ((text, ""), (text.rstrip(":"), rest)):  # "…::1:" at the end of a sentence
        address = parse_address(candidate)
        if address is not None:
            return SCRUBBED + kept if own.mine(address) else None
    return None


def scrub_text(text: str, own: OwnAddresses) -> tuple[str, int]:
    """``text`` with each of our addresses replaced by ``[scrubbed]``, and how many were."""
    if not own or not _MAYBE_ADDRESS.search(text):
        return text, 0
    count = 0

    def replace(found: re.Match[str]) -> str:
        nonlocal count
        replacement = _replacement(found, own)
        if replacement is None:
            return found.group(0)
        count += 1
        return replacement

    return _CANDIDATE.sub(replace, text), count


def scrub_value(value: Any, own: OwnAddresses) -> tuple[Any, int]:
    """A JSON-like value (dicts, lists, strings, scalars) scrubbed at every depth, keys included."""
    if isinstance(value, str):
        return scrub_text(value, own)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        total = 0
        for k, v in value.items():
            key, n_key = scrub_text(k, own) if isinstance(k, str) else (k, 0)
            item, n_item = scrub_value(v, own)
            out[key] = item
            total += n_key + n_item
        return out, total
    if isinstance(value, list | tuple):
        items = [scrub_value(v, own) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def scrub_record(record: Mapping[str, Any], own: OwnAddresses) -> dict[str, Any]:
    """A record with our addresses scrubbed from every field; ``test_keys.scrubbed`` counts them."""
    if not own:
        return dict(record)
    scrubbed, count = scrub_value(record, own)
    if count:
        test_keys = dict(scrubbed.get("test_keys") or {})
        test_keys[SCRUBBED_KEY] = int(test_keys.get(SCRUBBED_KEY) or 0) + count
        scrubbed["test_keys"] = test_keys
    return dict(scrubbed)


@dataclass
class AddressBook:
    """The addresses the probe has had so far, kept fresh across a long life (DHCP, mobile).

    ``discover`` (the interfaces' addresses: ``probe.service.addresses.interface_addresses``) is
    called again when the last call is older than ``max_age`` seconds; :meth:`learn` adds one seen
    elsewhere (the test helper's view of our public address, a socket's local address). Addresses
    once ours stay in the set (an old address still names the volunteer), up to ``limit``.
    Thread-safe: the daemon's HTTP thread and the log filter read it too.
    """

    discover: Callable[[], Iterable[str]] | None = None
    max_age: float = 30.0
    limit: int = 1024
    clock: Callable[[], float] = time.monotonic
    _known: dict[str, None] = field(default_factory=dict, repr=False)
    _snapshot: OwnAddresses = field(default_factory=OwnAddresses, repr=False)
    _refreshed: float | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def learn(self, *addresses: str) -> None:
        with self._lock:
            self._add(addresses)

    def current(self) -> OwnAddresses:
        """The set to scrub now (rediscovered first when stale)."""
        with self._lock:
            now = self.clock()
            if self.discover is not None and (self._refreshed is None or now - self._refreshed >= self.max_age):
                self._refreshed = now
                self._add(self.discover())
            return self._snapshot

    def _add(self, addresses: Iterable[str]) -> None:
        new = [a for a in addresses if a not in self._known and parse_address(a) is not None]
        if not new:
            return
        for address in new:
            self._known[address] = None
        while len(self._known) > self.limit:
            del self._known[next(iter(self._known))]
        self._snapshot = own_addresses(self._known)
