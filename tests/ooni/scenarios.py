"""Real target runs against loopback servers, one per kind of outcome, for the OONI-format tests.

Every run goes through the real checks and the real verdict table (``measure_target``, or
``throttling_test`` + ``decide`` for the throttled case, whose pipeline step needs port 443).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import trustme

from probe.analysis.verdict import Controls, decide
from probe.checks import tcp
from probe.checks.throughput import throttling_test
from probe.core.config import Target, parse_resolver
from probe.core.records import ProbeMeta
from probe.pipeline import TargetOutcome, measure_target
from tests.checks.test_throughput import RATE, SLOW, ThroughputServer
from tests.circumvention_servers import free_port, have, microsocks_argv, tcp_open, wait_for
from tests.conftest import make_context, server_context
from tests.loopback import DNSServer, Server, closed_port, http_app, rst_app

META = ProbeMeta(probe_id="probe-ooni", probe_cc="IT", probe_asn="AS30722", probe_network_name="Loopback Net")


@dataclass(frozen=True)
class Scenario:
    name: str
    outcome: TargetOutcome


def _pinned(name: str, port: int, **kw: object) -> Target:
    values: dict[str, object] = dict(
        name=name, service=name, category="messaging", addresses=("127.0.0.1",), ports=(port,),
        checks=("tcp", "tls", "http"), sni="good.test", urls=(f"https://good.test:{port}/",),
    )
    values.update(kw)
    return Target(**values)  # type: ignore[arg-type]


async def _reachability(ca: trustme.CA, ca_file: Path) -> list[Scenario]:
    ctx = make_context(ca_file)
    ctx = replace(ctx, meta=META)
    ok = Controls(network_ok=True)
    good = server_context(ca, "good.test")
    out: list[Scenario] = []
    async with Server(http_app, good) as server, Server(rst_app) as rst, Server(http_app) as plain, \
            DNSServer() as dns_server:
        out.append(Scenario("ok", await measure_target(_pinned("ok", server.port), ctx, ok)))
        out.append(Scenario("tcp_blocked", await measure_target(_pinned("tcpblocked", closed_port()), ctx, ok)))
        out.append(Scenario("tls_reset", await measure_target(_pinned("tlsreset", rst.port), ctx, ok)))
        blockpage = _pinned("blockpage", plain.port, checks=("tcp", "http"), sni=None,
                            urls=(f"http://127.0.0.1:{plain.port}/blockpage",))
        out.append(Scenario("block_page", await measure_target(blockpage, ctx, ok)))
        # DNS: the tested resolver answers a bogon (10.0.0.1) for the name, as an injector would.
        dns_ctx = replace(make_context(ca_file, resolvers=(parse_resolver(f"udp://127.0.0.1:{dns_server.port}"),)),
                          meta=META)
        dns_target = Target(name="dnsblocked", service="dnsblocked", category="messaging", host="bogon.test",
                            ports=(server.port,), checks=("dns", "tcp"))
        out.append(Scenario("dns_blocked", await measure_target(dns_target, dns_ctx, ok)))
    return out


async def _throttled(ca: trustme.CA, ca_file: Path) -> Scenario:
    ctx = replace(make_context(ca_file, throughput_max_seconds=6.0), meta=META)
    target = Target(name="throttled", service="throttled", category="video", host=SLOW,
                    addresses=("127.0.0.1",), checks=("tcp", "throughput"))
    async with ThroughputServer(server_context(ca, "good.test"), rate=RATE, throttled=frozenset({SLOW})) as srv:
        start = ctx.clock()
        connect = await tcp.connect("127.0.0.1", srv.port, ctx, target=target.name)
        results, decision = await throttling_test(target, ctx, "127.0.0.1", srv.port, "https://good.test/big",
                                                  rng=random.Random(7))
    everything = (connect, *results)
    verdict = decide(target, everything, Controls(network_ok=True, throttling=decision), start)
    return Scenario("throttled", TargetOutcome(replace(target, ports=(srv.port,)), everything, verdict))


async def _circumvention(ca_file: Path, port: int) -> Scenario:
    from tests.circumvention.test_pipeline_circumvention import _target as socks_target

    ctx = replace(make_context(ca_file), meta=META)
    outcome = await measure_target(socks_target(port), ctx, Controls(network_ok=True))  # type: ignore[arg-type]
    return Scenario("circumvention", outcome)


def run_all(ca: trustme.CA, ca_file: Path) -> list[Scenario]:
    """Every scenario, measured now (about 10 s, mostly the throttled transfer)."""

    proxy = None
    if have("microsocks"):  # scripts/test installs it; without it, that scenario is left out
        port = free_port()
        proxy = subprocess.Popen(microsocks_argv("127.0.0.1", port), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        assert wait_for(lambda: tcp_open("127.0.0.1", port), 10)

    async def main() -> list[Scenario]:
        found = await _reachability(ca, ca_file)
        found.append(await _throttled(ca, ca_file))
        if proxy is not None:
            found.append(await _circumvention(ca_file, port))
        return found

    try:
        return asyncio.run(main())
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait(5)
