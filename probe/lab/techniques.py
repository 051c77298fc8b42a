"""Censorship techniques and benign conditions, applied with real kernel mechanisms.

Each function takes the lab, a :class:`Handle` to record its undo steps in, and
its parameters. Per-target techniques take ``host`` (a name from HOSTS) or
explicit ``addresses``/``subnet``. All run in the censor's namespace unless a
condition belongs to the servers (server_down, server_slow, cert_expired).

There is no netem, tbf or police action on this kernel: throttling is a string
match that sets a connmark, CLASSIFY into an htb class whose pfifo leaf is short
(so excess is dropped, like a policer); loss is ``-m statistic``; latency is an
NFQUEUE relay that holds packets.
"""

from __future__ import annotations

import sys
from typing import Any

from probe.lab.base import TECHNIQUES, Handle, LabError, run
from probe.lab.censor import BLOCKPAGE_PORT, MITM_PORT, REDIRECT_PORT, UNKNOWN_BLOCKPAGES, UNKNOWN_PORT
from probe.lab.lab import Lab
from probe.lab.load import link_args
from probe.lab.topology import BOGON, SINKHOLE, host


def _ipt(lab: Lab, handle: Handle, table: str, chain: str, rule: list[str], where: str = "-I") -> None:
    """Insert (or with where="-A", append) an iptables rule in the censor namespace; remember how to delete it."""
    base = ["ip", "netns", "exec", lab.ns_censor, "iptables", "-w", "-t", table]
    run([*base, where, chain, *rule])
    handle.undo.append([*base, "-D", chain, *rule])


def _targets(host_name: str | None, addresses: list[str] | None, subnet: str | None) -> list[str]:
    if subnet:
        return [subnet]
    if addresses:
        return list(addresses)
    if host_name:
        return [host(host_name).address]
    raise LabError("give host=, addresses= or subnet=")


def _rules(lab: Lab, handle: Handle, entries: dict[str, Any]) -> None:
    lab._edit_json("rules.json", entries, add=True)
    handle.rules = entries


def _behaviour(lab: Lab, handle: Handle, entries: dict[str, Any]) -> None:
    lab._edit_json("behaviour.json", entries, add=True)
    handle.behaviour = entries


# -- DNS -------------------------------------------------------------------------------------


def dns_nxdomain(lab: Lab, handle: Handle, host: str) -> None:
    """1. The ISP resolver says the name does not exist."""
    _rules(lab, handle, {"dns_nxdomain": [host]})


def dns_bogon(lab: Lab, handle: Handle, host: str, answer: str = BOGON) -> None:
    """2. The ISP resolver answers a bogon (or a sinkhole: pass answer=SINKHOLE)."""
    _rules(lab, handle, {"dns_bogon": {host: answer}})


def dns_inject(lab: Lab, handle: Handle, host: str, answer: str = SINKHOLE) -> None:
    """3. An on-path injector (scapy) answers first; the real answer arrives later.

    The real answer for the name (UDP from port 53, on the censor hop, forwarded or from the
    resolver there) goes to the injector's NFQUEUE, which holds it until the forgery is out: the
    injector wins every race, under any CPU load, and the real answer still arrives.
    """
    queue = str(lab.next_mark())
    ready = lab.state / f"injector-{host}.ready"
    pid = lab.spawn(lab.ns_censor, [sys.executable, "-m", "probe.lab.censor", "inject", str(lab.state), "left",
                                    host, answer, queue], f"inject-{host}.log")
    handle.pids.append(pid)
    lab.wait_until(ready.exists, f"the DNS injector (inject-{host}.log)", 60)  # scapy loads slowly under load
    handle.undo.append(["rm", "-f", str(ready)])
    qname = "".join(f"|{len(label):02x}|{label}" for label in host.rstrip(".").split(".")) + "|00|"
    for chain in ("FORWARD", "OUTPUT"):
        _ipt(lab, handle, "filter", chain, ["-p", "udp", "--sport", "53", "-m", "string", "--algo", "bm", "--icase",
                                            "--hex-string", qname, "-j", "NFQUEUE", "--queue-num", queue])


# -- IP ----------------------------------------------------------------------------------------


def ip_drop(lab: Lab, handle: Handle, host: str | None = None, addresses: list[str] | None = None,
            subnet: str | None = None) -> None:
    """4. Silent drop of addresses or a whole subnet (the 2018 cloud-range pattern)."""
    for dst in _targets(host, addresses, subnet):
        _ipt(lab, handle, "filter", "FORWARD", ["-d", dst, "-j", "DROP"])


def ip_reject(lab: Lab, handle: Handle, host: str | None = None, addresses: list[str] | None = None,
              subnet: str | None = None, mode: str = "rst") -> None:
    """5. Reject with a TCP RST or an ICMP host-unreachable."""
    if mode not in ("rst", "icmp"):
        raise LabError(f"ip_reject mode {mode!r}: rst or icmp")
    for dst in _targets(host, addresses, subnet):
        _ipt(lab, handle, "filter", "FORWARD", ["-d", dst, "-j", "REJECT", "--reject-with",
                                                 "icmp-host-unreachable"])
        if mode == "rst":  # inserted last, so it sits above the ICMP rule for TCP
            _ipt(lab, handle, "filter", "FORWARD", ["-d", dst, "-p", "tcp", "-j", "REJECT", "--reject-with",
                                                     "tcp-reset"])


# -- SNI, HTTP, TLS ---------------------------------------------------------------------------


def _sni_match(sni: str) -> list[str]:
    return ["-p", "tcp", "--dport", "443", "-m", "string", "--algo", "bm", "--string", sni]


def sni_rst(lab: Lab, handle: Handle, sni: str) -> None:
    """6. A ClientHello carrying the name is answered with an RST (and dropped)."""
    _ipt(lab, handle, "filter", "FORWARD", [*_sni_match(sni), "-j", "REJECT", "--reject-with", "tcp-reset"])


def sni_drop(lab: Lab, handle: Handle, sni: str) -> None:
    """7. The flow goes silent after the ClientHello: every later packet is dropped."""
    mark = str(lab.next_mark())
    _ipt(lab, handle, "filter", "FORWARD", ["-m", "connmark", "--mark", mark, "-j", "DROP"])
    _ipt(lab, handle, "filter", "FORWARD", [*_sni_match(sni), "-j", "CONNMARK", "--set-mark", mark])


def http_blockpage(lab: Lab, handle: Handle, host: str, mode: str = "inject") -> None:
    """8. Plain HTTP to the host is answered by the censor: a block page, or a redirect to one."""
    if mode not in ("inject", "redirect"):
        raise LabError(f"http_blockpage mode {mode!r}: inject or redirect")
    port = BLOCKPAGE_PORT if mode == "inject" else REDIRECT_PORT
    _ipt(lab, handle, "nat", "PREROUTING", ["-i", "left", "-p", "tcp", "-d", _address(host), "--dport", "80",
                                             "-j", "REDIRECT", "--to-ports", str(port)])


def http_unknown_blockpage(lab: Lab, handle: Handle, host: str, style: str = "en") -> None:
    """8b. Plain HTTP to the host is answered by the censor with a block page no fingerprint knows
    (English, Persian iframe, Chinese, Turkish without a title, Spanish 403, or a redirect to another domain)."""
    if style not in UNKNOWN_BLOCKPAGES:
        raise LabError(f"http_unknown_blockpage style {style!r}: one of {', '.join(UNKNOWN_BLOCKPAGES)}")
    _rules(lab, handle, {"blockpage_style": {host: style}})
    _ipt(lab, handle, "nat", "PREROUTING", ["-i", "left", "-p", "tcp", "-d", _address(host), "--dport", "80",
                                             "-j", "REDIRECT", "--to-ports", str(UNKNOWN_PORT)])


def url_block(lab: Lab, handle: Handle, host: str, path: str) -> None:
    """12. A request for one path (a channel page) is reset; the rest of the host stays reachable."""
    _ipt(lab, handle, "filter", "FORWARD", ["-p", "tcp", "-d", _address(host), "--dport", "80", "-m", "string",
                                             "--algo", "bm", "--string", f"GET {path} ", "-j", "REJECT",
                                             "--reject-with", "tcp-reset"])


def tls_mitm(lab: Lab, handle: Handle, host: str) -> None:
    """9. TLS to the host is intercepted by a proxy with a certificate from an untrusted CA."""
    _ipt(lab, handle, "nat", "PREROUTING", ["-i", "left", "-p", "tcp", "-d", _address(host), "--dport", "443",
                                             "-j", "REDIRECT", "--to-ports", str(MITM_PORT)])


def _address(name: str) -> str:
    return host(name).address


# -- throttling and shaping ----------------------------------------------------------------------


def _directions(direction: str) -> list[str]:
    table = {"down": ["left"], "up": ["right"], "both": ["left", "right"]}
    if direction not in table:
        raise LabError(f"direction {direction!r}: down, up or both")
    return table[direction]


def _burst(rate_kbit: float) -> str:
    """Small bursts make htb behave like a policer; high rates need enough to keep the link busy."""
    return str(max(1600, int(rate_kbit * 1000 / 8 / 100)))  # ~10 ms of traffic, at least one packet


def throttle_sni(lab: Lab, handle: Handle, sni: str, rate_kbit: float = 128, direction: str = "both",
                 limit: int = 4, parent: str = "1:") -> None:
    """10. Flows whose ClientHello carries the name are policed to rate_kbit, per direction.

    ``parent="1:1"`` puts the policer behind the access link that ``bufferbloat`` or ``lte`` made
    (apply that first): the policed flow is then limited by both.
    """
    mark = lab.next_mark()
    classid = f"1:{mark}"
    ns = ["ip", "netns", "exec", lab.ns_censor]
    _ipt(lab, handle, "mangle", "FORWARD", [*_sni_match(sni), "-j", "CONNMARK", "--set-mark", str(mark)])
    for iface in _directions(direction):
        burst = _burst(rate_kbit)
        run([*ns, "tc", "class", "add", "dev", iface, "parent", parent, "classid", classid, "htb", "rate",
             f"{rate_kbit}kbit", "ceil", f"{rate_kbit}kbit", "burst", burst, "cburst", burst, "quantum", "1514"])
        run([*ns, "tc", "qdisc", "add", "dev", iface, "parent", classid, "handle", f"{mark}:", "pfifo", "limit",
             str(limit)])
        handle.undo.append([*ns, "tc", "class", "del", "dev", iface, "classid", classid])
        handle.undo.append([*ns, "tc", "qdisc", "del", "dev", iface, "parent", classid, "handle", f"{mark}:"])
        _ipt(lab, handle, "mangle", "POSTROUTING", ["-o", iface, "-m", "connmark", "--mark", str(mark), "-j",
                                                    "CLASSIFY", "--set-class", classid])


def shape(lab: Lab, handle: Handle, rate_kbit: float, direction: str = "both") -> None:
    """Benign: the whole link is slow (a 1, 10 or 100 Mbit/s access line)."""
    ns = ["ip", "netns", "exec", lab.ns_censor]
    for iface in _directions(direction):
        run([*ns, "tc", "class", "change", "dev", iface, "classid", "1:1", "htb", *link_args(rate_kbit)])
        handle.undo.append([*ns, "tc", "class", "change", "dev", iface, "classid", "1:1", "htb", "rate",
                            "10gbit", "burst", "4mb", "cburst", "4mb", "quantum", "60000"])


def bufferbloat(lab: Lab, handle: Handle, rate_kbit: float, limit: int = 500, direction: str = "both") -> None:
    """Benign: a slow access link with a deep queue (a home DSL or LTE router), ``limit`` packets.

    The link class 1:1 gets a leaf 1:2 with a pfifo of ``limit`` packets that every packet not
    CLASSIFY'd elsewhere goes to (a u32 match-all filter), so that a policer added with
    ``throttle_sni(parent="1:1")`` sits behind the same link.
    """
    ns = ["ip", "netns", "exec", lab.ns_censor]
    shape(lab, handle, rate_kbit, direction)
    for iface in _directions(direction):
        run([*ns, "tc", "class", "add", "dev", iface, "parent", "1:1", "classid", "1:2", "htb", *link_args(rate_kbit)])
        handle.undo.append([*ns, "tc", "class", "del", "dev", iface, "classid", "1:2"])
        run([*ns, "tc", "qdisc", "add", "dev", iface, "parent", "1:2", "handle", "2:", "pfifo", "limit", str(limit)])
        run([*ns, "tc", "filter", "add", "dev", iface, "parent", "1:", "protocol", "ip", "prio", "10", "u32",
             "match", "u32", "0", "0", "flowid", "1:2"])
        handle.undo.append([*ns, "tc", "filter", "del", "dev", iface, "parent", "1:", "prio", "10"])


def lte(lab: Lab, handle: Handle, rates_kbit: tuple[float, ...] = (4000, 1500, 6000, 2500), period: float = 3.0,
        limit: int = 500, seconds: float = 3600) -> None:
    """Benign: a radio link whose rate changes every ``period`` seconds (a deep queue, as ``bufferbloat``)."""
    bufferbloat(lab, handle, rates_kbit[0], limit)
    argv = [sys.executable, "-m", "probe.lab.load", "lte", str(lab.state), ",".join(_directions("both")),
            ",".join(str(r) for r in rates_kbit), str(period), str(seconds)]
    handle.pids.append(lab.spawn(lab.ns_censor, argv, "lte.log"))
    ready = lab.state / "lte.ready"
    lab.wait_until(ready.exists, "the link-rate changer (lte.log)", 20)
    handle.undo.append(["rm", "-f", str(ready)])


def cross_traffic(lab: Lab, handle: Handle, host: str = "control2.test", seconds: float = 3600) -> None:
    """Benign: another download saturates the link while the probe measures (the volunteer's own traffic)."""
    address = _address(host)
    ready = lab.state / f"cross-{address}.ready"
    argv = [sys.executable, "-m", "probe.lab.load", "cross", str(lab.state), address, host, str(seconds)]
    handle.pids.append(lab.spawn(lab.ns_client, argv, f"cross-{address}.log"))
    lab.wait_until(ready.exists, f"the cross traffic (cross-{address}.log)", 30)
    handle.undo.append(["rm", "-f", str(ready)])


# -- UDP ---------------------------------------------------------------------------------------


def udp_block(lab: Lab, handle: Handle, host: str | None = None, addresses: list[str] | None = None,
              subnet: str | None = None) -> None:
    """11. UDP (QUIC) to the host is dropped; TCP still works."""
    for dst in _targets(host, addresses, subnet):
        _ipt(lab, handle, "filter", "FORWARD", ["-d", dst, "-p", "udp", "-j", "DROP"])


# -- benign conditions ---------------------------------------------------------------------------


def loss(lab: Lab, handle: Handle, percent: float) -> None:
    """Random loss in both directions, like a bad radio link."""
    _ipt(lab, handle, "filter", "FORWARD", ["-m", "statistic", "--mode", "random", "--probability",
                                             f"{percent / 100:.4f}", "-j", "DROP"])


def latency(lab: Lab, handle: Handle, ms: float, jitter_ms: float = 0.0) -> None:
    """Round-trip latency ms ± jitter_ms, half each way, by an NFQUEUE relay that holds packets."""
    queue = str(lab.next_mark())
    log = f"delay-{queue}.log"
    pid = lab.spawn(lab.ns_censor, [sys.executable, "-m", "probe.lab.censor", "delay", str(lab.state), queue,
                                    str(ms / 2), str(jitter_ms / 2)], log)
    handle.pids.append(pid)
    lab.wait_until((lab.state / f"delay-{queue}.ready").exists, f"the latency relay ({log})", 10)
    # Appended, not inserted: the relay accepts what it holds, so it must come after every blocking rule.
    # No --queue-bypass: a dead relay must stop traffic, not silently remove the latency.
    _ipt(lab, handle, "filter", "FORWARD", ["-j", "NFQUEUE", "--queue-num", queue], where="-A")


def server_down(lab: Lab, handle: Handle, host: str) -> None:
    """The origin is down: its address disappears from the server network."""
    address = _address(host)
    argv = ["ip", "netns", "exec", lab.ns_srv, "ip", "addr"]
    run([*argv, "del", f"{address}/32", "dev", "eth0"])
    handle.undo.append([*argv, "add", f"{address}/32", "dev", "eth0"])


def server_slow(lab: Lab, handle: Handle, host: str, seconds: float = 1.0) -> None:
    """An overloaded origin: every response waits."""
    _behaviour(lab, handle, {"slow": {host: seconds}})


def cert_expired(lab: Lab, handle: Handle, host: str) -> None:
    """The origin serves an expired certificate."""
    _behaviour(lab, handle, {"expired": [host]})


SITE_VIEWS = ("legal451", "withheld", "language", "georedirect", "dynamic", "challenge", "forbidden")


def site_view(lab: Lab, handle: Handle, host: str, kind: str) -> None:
    """The origin answers the probe's client unlike everyone else, or every time differently
    (probe/lab/servers.py ``view``): content withheld by the origin (``legal451``, ``withheld``), or
    benign (``language``, ``georedirect``, ``dynamic``, ``challenge``, ``forbidden``)."""
    if kind not in SITE_VIEWS:
        raise LabError(f"site_view kind {kind!r}: one of {', '.join(SITE_VIEWS)}")
    _behaviour(lab, handle, {"views": {host: kind}})


TECHNIQUES.update({
    f.__name__: f
    for f in (dns_nxdomain, dns_bogon, dns_inject, ip_drop, ip_reject, sni_rst, sni_drop, http_blockpage, url_block,
              tls_mitm, throttle_sni, shape, bufferbloat, lte, cross_traffic, udp_block, loss, latency, server_down,
              server_slow, cert_expired, http_unknown_blockpage, site_view)
})
