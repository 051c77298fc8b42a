"""The lab's hosts and addresses (all from 198.18.0.0/15, used only inside the lab's namespaces).

::

    client ──(198.18.0.0/30)── r1 ── r2 ... rN ──(198.18.2.0/30)── srv
    (probe)                 (censor at hop k)                    (all server hosts)

The server namespace holds every host's address on one link, grouped in /24s:
services (198.18.10.0/24), the "cloud" (198.18.20.0/24: a blocked service and
innocent neighbours, the 2018 pattern) and controls (198.18.30.0/24).
"""

from __future__ import annotations

from dataclasses import dataclass

ZONE = "test"  # RFC 2606: reserved, never resolvable outside the lab


@dataclass(frozen=True)
class Host:
    name: str  # DNS name served by the lab's authoritative server
    address: str
    role: str  # "service", "cloud", "control", "infra"
    service: str


HOSTS: dict[str, Host] = {
    h.name: h
    for h in (
        Host("web.telegram.test", "198.18.10.10", "service", "telegram"),
        Host("api.telegram.test", "198.18.10.11", "service", "telegram"),
        Host("t.me.test", "198.18.10.12", "service", "telegram"),
        Host("web.whatsapp.test", "198.18.10.20", "service", "whatsapp"),
        Host("twitter.test", "198.18.10.30", "service", "twitter"),
        Host("abs.twimg.test", "198.18.10.31", "service", "twitter"),
        Host("pay.payments.test", "198.18.10.40", "service", "payments"),
        Host("media.telegram.test", "198.18.10.41", "service", "telegram"),
        Host("tg-cloud.cloud.test", "198.18.20.10", "cloud", "telegram"),
        Host("shop.cloud.test", "198.18.20.11", "cloud", "shop"),
        Host("games.cloud.test", "198.18.20.12", "cloud", "games"),
        Host("news.other.test", "198.18.21.10", "cloud", "news"),
        Host("control.test", "198.18.30.10", "control", "control"),
        Host("control2.test", "198.18.30.11", "control", "control"),
        Host("dns.test", "198.18.10.53", "infra", "dns"),
        Host("doh.test", "198.18.10.54", "infra", "dns"),
        Host("helper.test", "198.18.30.20", "infra", "test-helper"),
    )
}

CLOUD_SUBNET = "198.18.20.0/24"
SUBNETS = ("198.18.10.0/24", "198.18.20.0/24", "198.18.21.0/24", "198.18.30.0/24")
AUTH_DNS = HOSTS["dns.test"].address
DOH = HOSTS["doh.test"].address
HELPER = HOSTS["helper.test"].address
SINKHOLE = "198.18.40.40"  # routed to nowhere: forged answers point here
BOGON = "10.10.34.34"  # Iran's block-page address, a classic forged answer

CLIENT_ADDR, CLIENT_GW = "198.18.0.2", "198.18.0.1"
SRV_ADDR, SRV_GW = "198.18.2.2", "198.18.2.1"
ISP_RESOLVER = CLIENT_GW  # the censor's resolver, on the first router


def transit(i: int) -> tuple[str, str]:
    """Addresses of the link between router i and router i+1 (1-based)."""
    base = 4 * i
    return f"198.18.1.{base + 1}", f"198.18.1.{base + 2}"


def transit_net(i: int) -> str:
    """The /30 of the link between router i and router i+1 (a route needs the network, not a host)."""
    return f"198.18.1.{4 * i}/30"


def router_address(hop: int) -> str:
    """Router ``hop``'s address on its client-facing link: the source of its ICMP time-exceeded
    and of any ICMP it sends back to the client (what a traceroute from the client shows)."""
    if hop < 1:
        raise ValueError(f"hop {hop}: routers are numbered from 1")
    return CLIENT_GW if hop == 1 else transit(hop - 1)[1]


def host(name: str) -> Host:
    try:
        return HOSTS[name]
    except KeyError:
        raise KeyError(f"unknown lab host {name!r} (known: {', '.join(sorted(HOSTS))})") from None
