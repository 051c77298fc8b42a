"""A longer path: three routers with the censor in the middle (hop 2).

Raw-packet diagnostics (traceroute-style TTL probes) need to see each router and find the hop
where the censor acts, and every technique must work wherever on the path the censor sits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from probe.core import failures as F
from probe.lab import Lab

pytestmark = pytest.mark.lab

HOPS, CENSOR_HOP = 3, 2
TARGET = "web.telegram.test"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (CI runs as root)")
    with Lab(f"tmhop{os.getpid() % 100}", hops=HOPS, censor_hop=CENSOR_HOP) as running:
        yield running


def _scapy(lab: Lab, body: str) -> list[str]:
    """Run a scapy snippet in the client namespace; every sr1 has a timeout, the run a deadline."""
    script = "from scapy.all import IP, ICMP, TCP, sr1, conf\nconf.verb = 0\n" + body
    done = lab.exec(lab.ns_client, [sys.executable, "-c", script], timeout=60)
    return done.stdout.split()


def test_traceroute_sees_every_router_then_the_host(lab: Lab) -> None:
    address = "198.18.10.10"
    seen = _scapy(lab, "for ttl in range(1, 5):\n"
                       f"    r = sr1(IP(dst={address!r}, ttl=ttl) / ICMP(), timeout=2)\n"
                       "    print(f'{r[IP].src}/{r[ICMP].type}' if r else 'none')\n")
    routers = [f"{lab.router_address(h)}/11" for h in range(1, HOPS + 1)]  # 11: time exceeded
    assert seen == [*routers, f"{address}/0"]  # 0: echo reply from the host itself
    assert len(set(routers)) == HOPS


def test_rules_live_only_on_the_censor_hop(lab: Lab) -> None:
    handle = lab.apply("sni_rst", sni=TARGET)
    try:
        rules = {hop: lab.exec(lab.ns_router(hop), ["iptables-save"]).stdout for hop in range(1, HOPS + 1)}
    finally:
        lab.remove(handle)
    assert [hop for hop, text in rules.items() if TARGET in text] == [CENSOR_HOP]
    assert lab.ns_censor == lab.ns_router(CENSOR_HOP)


def test_icmp_reject_comes_from_the_censor_hop(lab: Lab) -> None:
    """What a diagnostic sees: the unreachable is sent by router 2, not by the host or router 1."""
    handle = lab.apply("ip_reject", host=TARGET, mode="icmp")
    try:
        seen = _scapy(lab, "r = sr1(IP(dst='198.18.10.10') / TCP(dport=443, flags='S'), timeout=2)\n"
                           "print(f'{r[IP].src}/{r[ICMP].type}/{r[ICMP].code}' if r and r.haslayer(ICMP) else r)\n")
    finally:
        lab.remove(handle)
    assert seen == [f"{lab.router_address(CENSOR_HOP)}/3/1"]  # destination unreachable, host unreachable


CASES: list[tuple[str, dict[str, Any], str, Any, str | None]] = [
    ("sni_rst", {"sni": TARGET}, TARGET, "tls", F.CONNECTION_RESET),
    ("ip_reject", {"host": TARGET, "mode": "icmp"}, TARGET, "tcp_ip", F.HOST_UNREACHABLE),
    ("tls_mitm", {"host": TARGET}, TARGET, "tls", F.SSL_UNKNOWN_AUTHORITY),
    # beyond hop 1 the injector races the authoritative server's answer to the ISP resolver
    ("dns_inject", {"host": "api.telegram.test"}, "api.telegram.test", "dns", None),
]


@pytest.mark.parametrize(("technique", "params", "target", "blocking", "failure"), CASES,
                         ids=[c[0] for c in CASES])
def test_technique_at_a_later_hop(lab: Lab, technique: str, params: dict[str, Any], target: str, blocking: Any,
                                  failure: str | None) -> None:
    handle = lab.apply(technique, **params)
    try:
        verdicts = Lab.verdicts(lab.run_probe(lab.targets_yaml([target])))
    finally:
        lab.remove(handle)
    verdict = verdicts[target]
    assert verdict["blocking"] == blocking, verdict["reason"]
    if failure is not None:
        assert verdict["failure"] == failure
    assert verdicts["control"]["accessible"] is True


def test_nothing_applied_nothing_blocked(lab: Lab) -> None:
    names = [TARGET, "api.telegram.test", "shop.cloud.test"]
    verdicts = Lab.verdicts(lab.run_probe(lab.targets_yaml(names)))
    assert {n: verdicts[n]["blocking"] for n in names} == dict.fromkeys(names, False)
