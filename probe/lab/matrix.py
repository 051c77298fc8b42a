"""The technique × verdict matrix: every technique and benign condition, what it must produce.

One table serves the end-to-end tests (tests/lab/test_techniques.py) and
``probe lab matrix``, which prints what the probe concluded next to what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probe.core import failures as F
from probe.lab.lab import Lab
from probe.lab.topology import CLOUD_SUBNET, SINKHOLE

HTTP_ONLY = {"checks": ["dns", "tcp", "http"], "ports": [80]}
NEWS = "news.other.test"
PLAIN_NEWS = {**HTTP_ONLY, "urls": [f"http://{NEWS}/"]}
CHANNEL = {"checks": ["dns", "tcp", "tls", "http"], "ports": [443], "urls": ["https://t.me.test/s/durov"]}
NO_HELPER = {"test_helper": None}


def _unknown(style: str, words: tuple[str, ...], **kw: Any) -> Case:
    return Case(f"blockpage-unknown-{style}", "http_unknown_blockpage", {"host": NEWS, "style": style}, NEWS,
                "http-diff", None, False, overrides=PLAIN_NEWS, rule="http_diff", reason=words, **kw)


def _benign(kind: str, overrides: dict[str, Any], words: tuple[str, ...] = (), **kw: Any) -> Case:
    host = "web.whatsapp.test" if kind == "forbidden" else NEWS
    return Case(f"benign-{kind}" + ("-no-helper" if kw.get("settings") else ""), "site_view",
                {"host": host, "kind": kind}, host, False, None, True, overrides=overrides, rule="accessible",
                reason=words, **kw)


@dataclass(frozen=True)
class Case:
    name: str
    technique: str
    params: dict[str, Any]
    target: str
    blocking: Any  # expected verdict blocking value (False, a string, or None)
    failure: str | None = None  # expected failure string, where one applies
    accessible: Any = "any"  # expected accessible, or "any"
    overrides: dict[str, Any] = field(default_factory=dict)
    bystanders: dict[str, Any] = field(default_factory=dict)  # other targets -> expected blocking
    settings: dict[str, Any] = field(default_factory=dict)  # settings of the targets file (e.g. no test helper)
    rule: str | None = None  # expected verdict rule, where it matters
    reason: tuple[str, ...] = ()  # words the verdict's reason must contain


#: Classes 1 and 2 of issue 14: unknown block pages, content withheld by the origin, and the benign differences.
BLOCKPAGE_CASES: tuple[Case, ...] = (
    # Block pages that no fingerprint knows, compared with the test helper's view (probe/analysis/httpdiff.py).
    _unknown("en", ("'Access denied'", f"'{NEWS} lab'", "233 bytes")),
    _unknown("fa", ("'دسترسی غیرمجاز'",)),
    _unknown("zh", ("'网站无法访问'",)),
    _unknown("tr", ("no title", "bytes")),
    _unknown("es", ("403", "'Acceso denegado'")),
    _unknown("redirect", ("another domain, warning.isp-portal.test",)),
    # Without a test helper: the same URL over verified TLS is the reference; at least inconclusive.
    Case("blockpage-unknown-en-no-helper", "http_unknown_blockpage", {"host": NEWS, "style": "en"}, NEWS, None,
         None, None, overrides=PLAIN_NEWS, settings=NO_HELPER, rule="http_unverified_diff",
         reason=("'Access denied'", "without a test helper")),
    Case("blockpage-unknown-redirect-no-helper", "http_unknown_blockpage", {"host": NEWS, "style": "redirect"},
         NEWS, None, None, None, overrides=PLAIN_NEWS, settings=NO_HELPER, rule="http_unverified_diff",
         reason=("warning.isp-portal.test",)),
    # Content withheld by a TLS-verified origin in the client's country (the helper sees the real page).
    Case("origin-451", "site_view", {"host": "t.me.test", "kind": "legal451"}, "t.me.test", "origin-withheld",
         None, False, overrides=CHANNEL, rule="origin_withheld", reason=("451", "legal restriction")),
    Case("origin-withheld-200", "site_view", {"host": "t.me.test", "kind": "withheld"}, "t.me.test",
         "origin-withheld", None, False, overrides=CHANNEL, rule="origin_withheld",
         reason=("'Channel unavailable'", "'channel durov'", "legal restriction")),
    # Benign differences: accessible, with the reason naming the explanation where there is one.
    _benign("dynamic", PLAIN_NEWS),
    _benign("dynamic", PLAIN_NEWS, settings=NO_HELPER),
    _benign("language", PLAIN_NEWS, ("another language (de against en)",)),
    _benign("georedirect", PLAIN_NEWS, (f"a redirect within the site, to de.{NEWS}",)),
    _benign("challenge", PLAIN_NEWS),
    _benign("forbidden", {"checks": ["dns", "tcp", "tls", "http"], "ports": [443]}),
)

CASES: tuple[Case, ...] = (
    Case("dns-nxdomain", "dns_nxdomain", {"host": "web.telegram.test"}, "web.telegram.test", "dns", F.DNS_NXDOMAIN,
         False),
    Case("dns-bogon", "dns_bogon", {"host": "web.telegram.test"}, "web.telegram.test", "dns", F.DNS_BOGON, False),
    Case("dns-inject", "dns_inject", {"host": "api.telegram.test", "answer": SINKHOLE}, "api.telegram.test", "dns",
         None, False),
    Case("ip-drop", "ip_drop", {"host": "tg-cloud.cloud.test"}, "tg-cloud.cloud.test", "tcp_ip", F.GENERIC_TIMEOUT,
         False),
    Case("ip-drop-subnet", "ip_drop", {"subnet": CLOUD_SUBNET}, "tg-cloud.cloud.test", "tcp_ip", F.GENERIC_TIMEOUT,
         False, bystanders={"shop.cloud.test": "tcp_ip", "games.cloud.test": "tcp_ip", "news.other.test": False}),
    Case("ip-reject-rst", "ip_reject", {"host": "web.telegram.test", "mode": "rst"}, "web.telegram.test", "tcp_ip",
         F.CONNECTION_REFUSED, False),
    Case("ip-reject-icmp", "ip_reject", {"host": "web.telegram.test", "mode": "icmp"}, "web.telegram.test",
         "tcp_ip", F.HOST_UNREACHABLE, False),
    Case("sni-rst", "sni_rst", {"sni": "web.telegram.test"}, "web.telegram.test", "tls", F.CONNECTION_RESET, False,
         bystanders={"web.whatsapp.test": False}),
    Case("sni-drop", "sni_drop", {"sni": "web.telegram.test"}, "web.telegram.test", "tls", F.GENERIC_TIMEOUT, False),
    Case("blockpage-inject", "http_blockpage", {"host": "web.whatsapp.test"}, "web.whatsapp.test", "http-diff",
         None, False, overrides={**HTTP_ONLY, "urls": ["http://web.whatsapp.test/"]}),
    Case("blockpage-redirect", "http_blockpage", {"host": "web.whatsapp.test", "mode": "redirect"},
         "web.whatsapp.test", "http-diff", None, False,
         overrides={**HTTP_ONLY, "urls": ["http://web.whatsapp.test/"]}),
    Case("tls-mitm", "tls_mitm", {"host": "web.whatsapp.test"}, "web.whatsapp.test", "tls", F.SSL_UNKNOWN_AUTHORITY,
         False),
    Case("udp-block", "udp_block", {"host": "web.telegram.test"}, "web.telegram.test", "quic", F.GENERIC_TIMEOUT,
         False, overrides={"checks": ["dns", "tcp", "tls", "quic"]}),
    Case("url-block", "url_block", {"host": "t.me.test", "path": "/s/durov"}, "t.me.test", "http-failure",
         F.CONNECTION_RESET, False, overrides={**HTTP_ONLY, "urls": ["http://t.me.test/s/durov"]}),
    # Benign conditions: never a blocking.
    Case("benign-loss-3pct", "loss", {"percent": 3}, "web.telegram.test", False, None, True),
    Case("benign-latency-50ms-jitter-20", "latency", {"ms": 50, "jitter_ms": 20}, "web.telegram.test", False, None,
         True),
    Case("benign-server-down", "server_down", {"host": "web.telegram.test"}, "web.telegram.test", None, None, None),
    Case("benign-server-slow", "server_slow", {"host": "web.telegram.test", "seconds": 1.0}, "web.telegram.test",
         False, None, True),
    Case("benign-cert-expired", "cert_expired", {"host": "web.telegram.test"}, "web.telegram.test", False,
         F.SSL_INVALID_CERTIFICATE, True),
    *BLOCKPAGE_CASES,
)


@dataclass(frozen=True)
class Observed:
    case: Case
    verdicts: dict[str, dict[str, Any]]

    @property
    def target(self) -> dict[str, Any]:
        return self.verdicts[self.case.target]

    def problems(self) -> list[str]:
        """Differences from the expectation; empty when the case passes."""
        c, v = self.case, self.target
        out = []
        if v["blocking"] != c.blocking:
            out.append(f"blocking {v['blocking']!r} != expected {c.blocking!r} ({v['rule']}: {v['reason']})")
        if c.failure is not None and v.get("failure") != c.failure:
            out.append(f"failure {v.get('failure')!r} != expected {c.failure!r}")
        if c.accessible != "any" and v["accessible"] != c.accessible:
            out.append(f"accessible {v['accessible']!r} != expected {c.accessible!r}")
        for name, expected in c.bystanders.items():
            got = self.verdicts[name]["blocking"]
            if got != expected:
                out.append(f"bystander {name}: blocking {got!r} != expected {expected!r}")
        if c.rule is not None and v["rule"] != c.rule:
            out.append(f"rule {v['rule']!r} != expected {c.rule!r} ({v['reason']})")
        out += [f"reason lacks {w!r}: {v['reason']}" for w in c.reason if w not in v["reason"]]
        if self.verdicts.get("control", {}).get("accessible") is not True:
            out.append("the control target was not accessible")
        return out


def run_case(lab: Lab, case: Case) -> Observed:
    names = [case.target, *case.bystanders]
    handle = lab.apply(case.technique, **case.params)
    try:
        records = lab.run_probe(lab.targets_yaml(names, overrides={case.target: case.overrides},
                                                 settings=case.settings))
    finally:
        lab.remove(handle)
    return Observed(case, Lab.verdicts(records))


def table(observed: list[Observed]) -> Any:
    from rich.table import Table

    t = Table(title="technique × verdict (probe lab matrix)")
    for column in ("case", "technique", "target", "expected", "observed", "failure", "rule", "ok"):
        t.add_column(column, overflow="fold")
    for o in observed:
        v = o.target
        t.add_row(o.case.name, o.case.technique, o.case.target, repr(o.case.blocking), repr(v["blocking"]),
                  v.get("failure") or "", v["rule"], "yes" if not o.problems() else "[red]NO[/]")
    return t
