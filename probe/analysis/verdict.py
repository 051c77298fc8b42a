"""The decision table: one target's check results and controls in, one Verdict out.

Pure: no I/O, no clock. Rows are tried in order and the first that matches
decides. Each row names the evidence it used (record ids). docs/verdicts.md
explains each row and the false positives it avoids; tests/analysis/test_verdict.py has
one test per row.

======================  ========================================================  ==========  ==============
rule                    when                                                       accessible  blocking
======================  ========================================================  ==========  ==============
no_measurement          nothing was measured                                       None        None
network_down            every control target failed: the probe is offline          None        None
dns_bogon               a tested resolver answered a bogon, the control did not    False       "dns"
dns_outage              tested and control resolvers both fail                     None        None
dns_no_control          a tested resolver fails, no control resolver ran           None        None
dns_failure             a tested resolver fails (NXDOMAIN, SERVFAIL, timeout...)   False       "dns"
                        while the control resolver answers
dns_inconsistent        answers share no address or network with the control's,    False       "dns"
                        and no verified TLS handshake succeeded on them
tcp_outage              every connect fails and so does the test helper's, or the  None        None
                        same-network control host's: an outage, not censorship
tcp_blocked             every connect fails; the helper connects, or no control    False       "tcp_ip"
tls_origin_certificate  the origin's certificate is invalid (expired, ...):        True        False
                        a server problem, not censorship
tls_interception        unknown authority or wrong host name on a certificate:     False       "tls"
                        someone else answers for this name
tls_sni                 the handshake fails with the target SNI and succeeds       False       "tls"
                        with a control SNI on the same address
tls_blocked             it fails with the control SNI too, but the test helper     False       "tls"
                        completes a handshake to the same address
tls_outage              it fails with the control SNI too (and at the helper)      False       None
http_blockpage          a plain-HTTP response matches a block page fingerprint     False       "http-diff"
                        or is 451
origin_withheld         the origin, over TLS verified for its name, answers 451,   False       "origin-withheld"
                        or a 200 page unlike the test helper's view of the URL
origin_refused          the verified origin answers this client 3xx/4xx/5xx and    None        None
                        the helper 2xx (bot defence, rate limit or geo: unclear)
http_diff               a plain-HTTP page unlike the test helper's, in a way no   False       "http-diff"
                        CDN, language or dynamic content explains
http_unverified_diff    no helper: a plain-HTTP page unlike the same URL over      None        None
                        verified TLS (title, length, redirect to another domain)
http_failure            the request fails after connect/handshake, and a control   False       "http-failure"
                        request (control Host/SNI, same address) gets an answer
http_outage             the control request fails too                              False       None
quic_blocked            QUIC fails while TCP and TLS to the host work              False       "quic"
throttling              the throughput decision says throttled                     True        "throttling"
circumvention_*         VPN/proxy handshakes: answered, blocked ("circumvention"),  (family)    (family)
                        silent by design (never blocked), outage, inconclusive
accessible              everything worked (a 4xx from a TLS-verified origin,       True        False
                        like WhatsApp Web's 403 to non-browsers, is still the
                        origin answering)
======================  ========================================================  ==========  ==============

A control target's own verdict uses the same table without the network_down row.
Partial failures (one address of several fails) do not block a target: a single
failing Telegram endpoint flagged the whole OONI test for years.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probe.analysis import circumvention as family
from probe.analysis.httpdiff import HTTPS_CONTROL, PAGE_CONTROL, Comparison, Page, compare, describe
from probe.analysis.rows import Row as _Row
from probe.core import failures
from probe.core.config import Target
from probe.core.records import CheckResult, Verdict

Results = Sequence[CheckResult[Any]]


@dataclass(frozen=True)
class Controls:
    """Control outcomes that come from outside the target's own results.

    ``network_ok``: did any control target work in this run (None: none ran).
    ``control_host_ok``: did the target's same-network control host answer.
    ``remote_tcp_ok`` / ``remote_tls_ok``: what the test helper, on the far side of the
    censor, saw for the same address (None: not asked, or it did not answer).
    ``throttling``: the throughput decision (probe.analysis.throttling) as a mapping, if run.
    """

    network_ok: bool | None = None
    control_host_ok: bool | None = None
    remote_tcp_ok: bool | None = None
    remote_tls_ok: bool | None = None
    throttling: Mapping[str, Any] | None = None


def _of(results: Results, check: str, role: str = "target") -> list[CheckResult[Any]]:
    return [r for r in results if r.check == check and r.role == role]


def _ids(results: Sequence[CheckResult[Any]]) -> tuple[str, ...]:
    return tuple(r.id for r in results)


def _common_failure(results: Sequence[CheckResult[Any]]) -> str | None:
    counts = Counter(r.failure for r in results if r.failure)
    return counts.most_common(1)[0][0] if counts else None


def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_network(f"{address}/{24 if ip.version == 4 else 48}", strict=False)


def consistent(answers: Sequence[str], control: Sequence[str]) -> bool:
    """True if the answers share an address or a /24 (/48) network with the control's."""
    if set(answers) & set(control):
        return True
    return bool({_network(a) for a in answers} & {_network(c) for c in control})


def _dns_row(results: Results) -> _Row | None:
    tested = _of(results, "dns")
    control = _of(results, "dns", "control")
    if not tested:
        return None
    ctrl = control[0] if control else None
    ctrl_ok = ctrl is not None and ctrl.ok
    evidence = _ids(tested + control)
    bogus = [r for r in tested if r.failure == failures.DNS_BOGON]
    if bogus and (ctrl is None or ctrl_ok):
        return _Row("dns_bogon", False, "dns",
                    f"resolver {bogus[0].details.resolver} answered bogon "
                    f"{', '.join(bogus[0].details.bogons)}", evidence, failures.DNS_BOGON)
    failed = [r for r in tested if not r.ok]
    if failed:
        failure = failed[0].failure
        where = failed[0].details.resolver
        if ctrl is None:
            return _Row("dns_no_control", None, None,
                        f"resolver {where} failed ({failure}) and no control resolver is configured",
                        evidence, failure)
        if not ctrl_ok:
            return _Row("dns_outage", None, None,
                        f"resolver {where} failed ({failure}) and so did the control resolver "
                        f"({ctrl.failure}): the name or its servers are down", evidence, failure)
        return _Row("dns_failure", False, "dns",
                    f"resolver {where} failed ({failure}) while the control resolver answered "
                    f"{', '.join(ctrl.details.addresses[:3])}", evidence, failure)
    if ctrl_ok:
        assert ctrl is not None
        odd = [r for r in tested if not consistent(r.details.addresses, ctrl.details.addresses)]
        verified = [r for r in _of(results, "tls") if r.ok and r.details.verified]
        if odd and not verified:
            return _Row("dns_inconsistent", False, "dns",
                        f"resolver {odd[0].details.resolver} answered "
                        f"{', '.join(odd[0].details.addresses[:3])}, which shares nothing with the "
                        f"control's {', '.join(ctrl.details.addresses[:3])}, and no verified TLS "
                        "handshake succeeded on them", evidence)
    return None


def _tcp_row(results: Results, controls: Controls) -> _Row | None:
    tcp = _of(results, "tcp")
    if not tcp or any(r.ok for r in tcp):
        return None
    failure = _common_failure(tcp)
    where = ", ".join(r.input for r in tcp[:4])
    remote = _of(results, "control", "control")
    if controls.remote_tcp_ok is False:
        return _Row("tcp_outage", None, None,
                    f"connects to {where} failed ({failure}) and the test helper cannot connect either: "
                    "the server is down, not blocked", _ids(tcp + remote), failure)
    if controls.control_host_ok is False:
        return _Row("tcp_outage", None, None,
                    f"connects to {where} failed ({failure}) and the control host on the same network "
                    "fails too: an outage, not censorship", _ids(tcp), failure)
    if controls.remote_tcp_ok:
        return _Row("tcp_blocked", False, "tcp_ip",
                    f"every connect to {where} failed ({failure}) while the test helper connects fine",
                    _ids(tcp + remote), failure)
    return _Row("tcp_blocked", False, "tcp_ip",
                f"every connect to {where} failed ({failure}) while the controls work",
                _ids(tcp), failure)


def _tls_row(results: Results, controls: Controls) -> _Row | None:
    tls = _of(results, "tls")
    if not tls or any(r.ok for r in tls):
        return None
    failure = _common_failure(tls)
    control = _of(results, "tls", "control")
    evidence = _ids(tls + control)
    sni = tls[0].details.sni
    if failure == failures.SSL_INVALID_CERTIFICATE:
        return _Row("tls_origin_certificate", True, False,
                    f"the certificate for {sni} is invalid (expired or not yet valid): a server "
                    "problem, not censorship", evidence, failure)
    if failure in (failures.SSL_UNKNOWN_AUTHORITY, failures.SSL_INVALID_HOSTNAME):
        cert = tls[0].details.certificate
        issuer = f" issued by {cert.issuer}" if cert is not None else ""
        return _Row("tls_interception", False, "tls",
                    f"the certificate presented for {sni}{issuer} fails validation ({failure}): "
                    "the connection is intercepted or redirected", evidence, failure)
    if any(r.ok for r in control):
        ctrl_sni = control[0].details.sni
        return _Row("tls_sni", False, "tls",
                    f"handshake with SNI {sni} failed ({failure}); with control SNI {ctrl_sni} on "
                    "the same address it succeeded", evidence, failure)
    if controls.remote_tls_ok:
        return _Row("tls_blocked", False, "tls",
                    f"handshakes to {tls[0].input} fail ({failure}) with any SNI, while the test helper "
                    "completes one: TLS to this address is blocked", evidence + _ids(_of(results, "control",
                    "control")), failure)
    return _Row("tls_outage", False, None,
                f"handshake with SNI {sni} failed ({failure}) and so did the control SNI: "
                "the server or the address is the problem, not the name", evidence, failure)


def _http_row(results: Results) -> _Row | None:
    http = _of(results, "http")
    if not http:
        return None
    for r in http:
        d = r.details
        if r.ok and not d.tls_verified and (d.blockpage or d.status == 451):
            what = f"block page {d.blockpage}" if d.blockpage else "HTTP 451"
            return _Row("http_blockpage", False, "http-diff",
                        f"{d.url} returned {what}", (r.id,))
    compared = _compared_row(results, http)
    if compared is not None:
        return compared
    failed = [r for r in http if not r.ok]
    if not failed:
        return None
    failure = failed[0].failure
    control = _of(results, "http", "control")
    evidence = _ids(failed + control)
    if any(r.ok for r in control):
        return _Row("http_failure", False, "http-failure",
                    f"{failed[0].details.url} failed ({failure}) after connecting; a control request "
                    "to the same address got an answer", evidence, failure)
    return _Row("http_outage", False, None,
                f"{failed[0].details.url} failed ({failure}) and the control request failed too",
                evidence, failure)


def _https_of(url: str) -> str:
    return "https://" + url.split("://", 1)[1] if url.startswith("http://") else url


def comparisons(results: Results) -> list[tuple[CheckResult[Any], CheckResult[Any], Comparison]]:
    """Each successful page of the target, with its reference and the comparison (pure)."""
    out = []
    helper = {r.details.url: r for r in _of(results, PAGE_CONTROL, "control") if r.ok}
    own = {r.details.url: r for r in _of(results, HTTPS_CONTROL, "control") if r.ok}
    for r in _of(results, "http"):
        if not r.ok or r.details.status is None:
            continue
        page = Page.from_details(r.details)
        if r.details.url in helper:
            ref = helper[r.details.url]
            out.append((r, ref, compare(page, [Page.from_json(h) for h in ref.details.hops])))
        elif not r.details.tls_verified and _https_of(r.details.url) in own:
            ref = own[_https_of(r.details.url)]
            out.append((r, ref, compare(page, [Page.from_details(ref.details)])))
    return out


def _compared_row(results: Results, http: Sequence[CheckResult[Any]]) -> _Row | None:
    """451 from a verified origin, then pages unlike the reference's (probe/analysis/httpdiff.py)."""
    for r in http:
        d = r.details
        if r.ok and d.tls_verified and d.status == 451:  # noqa: PLR2004
            return _Row("origin_withheld", False, "origin-withheld",
                        f"{d.url}: the origin, over TLS verified for its name, answered 451 Unavailable For "
                        "Legal Reasons (RFC 7725): the service withholds this content here (a legal "
                        "restriction), the network delivered it", (r.id,))
    rows = []
    for r, ref, c in comparisons(results):
        if c.outcome != "different":
            continue
        url, ids = r.details.url, (r.id, ref.id)
        evidence = {"http_diff": c.evidence()}
        assert c.probe is not None
        assert c.control is not None
        if ref.check == HTTPS_CONTROL:
            rows.append(_Row("http_unverified_diff", None, None,
                             f"{url} returned {describe(c.probe)} over plain HTTP, unlike the same URL over "
                             f"verified TLS, {describe(c.control)} ({c.why}); without a test helper the probe "
                             "cannot tell a censor's page from a site that serves HTTP differently",
                             ids, details=evidence))
        elif r.details.tls_verified:
            if c.probe.status is not None and c.probe.status // 100 == 2:  # noqa: PLR2004
                rows.append(_Row("origin_withheld", False, "origin-withheld",
                                 f"{url}: the origin, over TLS verified for its name, serves {describe(c.probe)} "
                                 f"where the test helper, in another network, gets {describe(c.control)} "
                                 f"({c.why}): the service withholds this content here (a legal restriction), "
                                 "not the network", ids, details=evidence))
            else:
                rows.append(_Row("origin_refused", None, None,
                                 f"{url}: the origin, over verified TLS, answers {describe(c.probe)} where the "
                                 f"test helper gets {describe(c.control)} ({c.why}): bot defence, a rate limit "
                                 "or a regional restriction; the network is not the cause", ids,
                                 details=evidence))
        else:
            rows.append(_Row("http_diff", False, "http-diff",
                             f"{url} returned {describe(c.probe)} where the test helper gets "
                             f"{describe(c.control)}: {c.why}; no CDN, language or dynamic content explains "
                             f"it (unknown block page, body sha256 {(c.probe.sha256 or '?')[:16]})",
                             ids, details=evidence))
    rows.sort(key=lambda row: row.blocking is None)  # a blocking before an inconclusive
    return rows[0] if rows else None


def _http_notes(results: Results) -> str:
    """Differences that a benign cause explains, for the accessible row's reason."""
    notes = [f"{r.details.url} differs from the reference: {c.why}" for r, _, c in comparisons(results)
             if c.outcome == "explained"]
    return "; " + "; ".join(notes) if notes else ""


def _quic_row(results: Results) -> _Row | None:
    quic = _of(results, "quic")
    if not quic or any(r.ok for r in quic):
        return None
    tcp_ok = any(r.ok for r in _of(results, "tcp") + _of(results, "tls"))
    if not tcp_ok:
        return None
    failure = _common_failure(quic)
    return _Row("quic_blocked", False, "quic",
                f"QUIC to {quic[0].input} failed ({failure}) while TCP/TLS to the host work",
                _ids(quic), failure)


def _throttling_row(results: Results, controls: Controls) -> _Row | None:
    decision = controls.throttling
    if not decision or decision.get("blocking") != "throttling":
        return None
    rate = decision.get("estimated_rate_bps")
    ctrl = decision.get("control_rate_bps")
    direction = decision.get("direction", "down")
    return _Row("throttling", True, "throttling",
                f"throughput {direction} is throttled to about {_kbit(rate)} against {_kbit(ctrl)} "
                "for the control", _ids(_of(results, "throughput") + _of(results, "throughput", "control")))


def _circumvention_row(results: Results, controls: Controls) -> _Row | None:
    """VPN and proxy reachability: the family's own table (docs/circumvention.md)."""
    return family.decide(results, controls.control_host_ok)


def _kbit(bytes_per_second: Any) -> str:
    if not isinstance(bytes_per_second, int | float):
        return "?"
    return f"{bytes_per_second * 8 / 1000:.0f} kbit/s"


def decide(target: Target, results: Results, controls: Controls, start_time: float) -> Verdict:
    """Apply the table (see the module docstring) to one target's results."""
    row = _decide(target, results, controls)
    details: dict[str, Any] = dict(row.details or {})
    if controls.throttling:
        details["throttling"] = dict(controls.throttling)
    return Verdict(
        target=target.name,
        service=target.service,
        category=target.category,
        accessible=row.accessible,
        blocking=row.blocking,
        rule=row.rule,
        reason=row.reason,
        start_time=start_time,
        evidence=row.evidence,
        failure=row.failure,
        details=details,
    )


def _decide(target: Target, results: Results, controls: Controls) -> _Row:
    if not results:
        return _Row("no_measurement", None, None, "no check ran for this target")
    if controls.network_ok is False and not target.control:
        return _Row("network_down", None, None,
                    "every control target failed too: the probe's own network is down")
    for row in (
        _dns_row(results),
        _tcp_row(results, controls),
        _tls_row(results, controls),
        _http_row(results),
        _quic_row(results),
        _throttling_row(results, controls),
        _circumvention_row(results, controls),
    ):
        if row is not None:
            return row
    partial = [r for r in results if not r.ok and r.role == "target"]
    note = f" ({len(partial)} of {len(results)} steps failed, e.g. {partial[0].input}: " \
        f"{partial[0].failure})" if partial else ""
    return _Row("accessible", True, False, f"all checks reached the service{note}{_http_notes(results)}",
                _ids([r for r in results if r.role == "target"]))
