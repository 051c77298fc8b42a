"""A stray datagram before the real answer must not abort a lookup; it is recorded (an injection signal).

Before: a forged answer from another port gave ``unknown_failure: got a response from ...``
(dnspython's UnexpectedSource), one with another transaction id ``dns_format_error``.
"""

from __future__ import annotations

import pytest

from probe.checks import dns
from probe.core.config import parse_resolver
from probe.core.context import Context
from tests.hostile.servers import STRAY_ADDRESS, StrayDNSServer
from tests.loopback import DNSServer


@pytest.mark.parametrize("stray", ["port", "id", "garbage"])
async def test_a_stray_datagram_is_ignored_and_recorded(ctx: Context, stray: str) -> None:
    async with StrayDNSServer(stray) as server:
        result = await dns.resolve("ok.test", parse_resolver(f"udp://127.0.0.1:{server.port}"), ctx, target="t")
        other_port = server.other.getsockname()[1]
    assert result.ok, result.failure
    assert result.details.addresses == ("198.18.1.10",)
    assert result.details.stray_answers == 2  # one per query (A and AAAA)
    if stray == "port":
        assert result.details.stray_sources == (f"127.0.0.1:{other_port}",)
    else:
        assert result.details.stray_sources == (f"127.0.0.1:{server.port}",)
    assert result.details.stray_addresses == (() if stray == "garbage" else (STRAY_ADDRESS,))


async def test_no_stray_no_record(ctx: Context) -> None:
    async with DNSServer() as server:
        result = await dns.resolve("ok.test", parse_resolver(f"udp://127.0.0.1:{server.port}"), ctx, target="t")
    assert result.ok and result.details.stray_answers == 0 and result.details.stray_sources == ()
