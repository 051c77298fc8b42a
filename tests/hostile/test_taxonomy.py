"""Every hostile server of this suite, over every way the probe talks to it: no record may come
out as ``unknown_failure`` (before: UnexpectedSource, httpx.DecodingError did)."""

from __future__ import annotations

import trustme

from probe.checks import dns, http
from probe.core import failures as F
from probe.core.config import parse_resolver
from probe.core.context import Context
from probe.core.records import CheckResult
from tests.conftest import server_context
from tests.hostile.servers import ROUTES, TCP_DNS_MODES, StrayDNSServer, hostile_app, tcp_dns_app
from tests.loopback import Server


async def test_no_hostile_server_gives_unknown_failure(ctx: Context, ca: trustme.CA) -> None:
    results: list[CheckResult[object]] = []
    tls = server_context(ca, "good.test", "127.0.0.1")
    async with Server(hostile_app) as plain, Server(hostile_app, tls) as secure:
        for path in ROUTES:
            results.append(await http.fetch(f"http://127.0.0.1:{plain.port}{path}", None, ctx, target=path))
            results.append(await http.fetch(f"https://good.test:{secure.port}{path}", "127.0.0.1", ctx,
                                            target=f"tls {path}"))
            doh = parse_resolver(f"https://127.0.0.1:{secure.port}{path}")
            results.append(await dns.resolve("ok.test", doh, ctx, target=f"doh {path}"))
    for mode in TCP_DNS_MODES:
        async with Server(tcp_dns_app(mode)) as server:
            spec = parse_resolver(f"tcp://127.0.0.1:{server.port}")
            results.append(await dns.resolve("ok.test", spec, ctx, target=f"dns tcp {mode}"))
    for stray in ("port", "id", "garbage"):
        async with StrayDNSServer(stray) as server:
            spec = parse_resolver(f"udp://127.0.0.1:{server.port}")
            results.append(await dns.resolve("ok.test", spec, ctx, target=f"stray {stray}"))
    outcomes = {r.target: r.failure for r in results}
    unknown = {target: failure for target, failure in outcomes.items()
               if failure is not None and failure.startswith(F.UNKNOWN_PREFIX)}
    assert not unknown, unknown
    assert all(f is None or f in F.KNOWN for f in outcomes.values()), outcomes
    assert len(results) == 3 * len(ROUTES) + len(TCP_DNS_MODES) + 3
    for way in ("", "tls ", "doh "):  # HTTP/0.9: bytes with no status line are not an EOF
        assert outcomes[f"{way}/http09"] == F.HTTP_PROTOCOL_ERROR
        assert outcomes[f"{way}/bad-gzip"] == F.HTTP_DECODING
