"""What every check receives besides its inputs: settings, identity, clock, transports.

Transports are injectable (like httpx's ``MockTransport``): tests pass a fake
``open_connection`` or an ``httpx`` transport instead of touching the network.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from probe.core.config import Settings
from probe.core.privacy import AddressBook
from probe.core.records import ProbeMeta, default_probe_id

OpenConnection = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def verifying_context(ca_bundle: str | None, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """System CAs plus the configured bundle (a lab's CA, say), hostname checks on."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def unverified_context(alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """For control handshakes: we want to know whether the server answers, not who it is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass
class Context:
    settings: Settings = field(default_factory=Settings)
    meta: ProbeMeta = field(default_factory=lambda: ProbeMeta(probe_id=default_probe_id()))
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.perf_counter
    open_connection: OpenConnection = asyncio.open_connection
    http_transport: Any = None  # an httpx.AsyncBaseTransport for tests; None = real network
    #: The probe's own addresses, scrubbed from its records (probe.core.privacy). The commands give it
    #: the interfaces' addresses (probe.service.addresses); checks add what they learn.
    own: AddressBook = field(default_factory=AddressBook)

    @cached_property
    def _ssl_cache(self) -> dict[tuple[bool, tuple[str, ...]], ssl.SSLContext]:
        return {}

    def ssl_context(self, *, verify: bool = True, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """Built once per (verify, alpn): loading CA files costs milliseconds per call."""
        key = (verify, alpn)
        cache = self._ssl_cache
        if key not in cache:
            cache[key] = (
                verifying_context(self.settings.ca_bundle, alpn) if verify else unverified_context(alpn)
            )
        return cache[key]
