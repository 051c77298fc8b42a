"""The verdict rows that compare pages (probe/analysis/verdict.py with probe/analysis/httpdiff.py):
origin_withheld, origin_refused, http_diff, http_unverified_diff, and the explained differences that
stay accessible. One table; each row with the reason's key words asserted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from probe.analysis import httpdiff
from probe.analysis.httpdiff import HTTPS_CONTROL, PAGE_CONTROL
from probe.analysis.verdict import Controls, decide
from probe.checks.control import PageControlDetails
from probe.checks.http import HTTPDetails
from probe.core.config import Target
from probe.core.records import CheckResult
from tests.analysis.test_httpdiff import BLOCK_EN, FORBIDDEN, REAL, article
from tests.analysis.test_verdict import OK_DNS, _r, tcp_r, tls_r

TARGET = Target(name="tg-web", service="telegram", category="messaging", host="web.telegram.test")
HTTP_URL, HTTPS_URL = "http://web.telegram.test/", "https://web.telegram.test/"
WITHHELD = ("<html><head><title>Channel unavailable</title></head><body><p>This channel can't be displayed "
            "in your country because it violates local laws.</p></body></html>")


def details(url: str, body: str, status: int = 200, verified: bool = False, location: str | None = None,
            lang: str | None = None) -> HTTPDetails:
    raw = body.encode()
    title = body.split("<title>")[1].split("</title>")[0] if "<title>" in body else None
    return HTTPDetails(url, "198.18.10.10", status=status, headers={}, location=location, body_length=len(raw),
                       body_sha256=f"sha-{len(raw)}", title=title, tls_verified=verified,
                       header_names=("content-type", "date"), lang=httpdiff.language(raw, lang),
                       shape=httpdiff.shape(raw))


def page_r(url: str, body: str, **kw: Any) -> CheckResult[Any]:
    return _r("http", details(url, body, **kw))


def helper_r(url: str, *hops: HTTPDetails) -> CheckResult[Any]:
    return _r(PAGE_CONTROL, PageControlDetails("https://helper/", url, tuple(asdict(h) for h in hops)),
              role="control")


def own_r(body: str) -> CheckResult[Any]:
    return _r(HTTPS_CONTROL, details(HTTPS_URL, body, verified=True), role="control")


BASE = [*OK_DNS, tcp_r()]
TLS = [*BASE, tls_r()]

CASES = [
    # name, results, rule, accessible, blocking, words in the reason
    ("plain HTTP block page unlike the helper's", [*BASE, page_r(HTTP_URL, BLOCK_EN),
                                                   helper_r(HTTP_URL, details(HTTP_URL, REAL))],
     "http_diff", False, "http-diff", ["'Access denied'", "'Example News - Home'", "200", str(len(BLOCK_EN))]),
    ("plain HTTP redirect to another domain", [*BASE, page_r(HTTP_URL, "", status=302,
                                                             location="http://blocked.isp.test/"),
                                               helper_r(HTTP_URL, details(HTTP_URL, REAL))],
     "http_diff", False, "http-diff", ["blocked.isp.test"]),
    ("451 from the verified origin", [*TLS, page_r(HTTPS_URL, BLOCK_EN, status=451, verified=True)],
     "origin_withheld", False, "origin-withheld", ["451", "legal"]),
    ("withheld 200 from the verified origin", [*TLS, page_r(HTTPS_URL, WITHHELD, verified=True),
                                               helper_r(HTTPS_URL, details(HTTPS_URL, REAL, verified=True))],
     "origin_withheld", False, "origin-withheld", ["'Channel unavailable'", "'Example News - Home'", "legal"]),
    ("verified origin refuses this client only", [*TLS, page_r(HTTPS_URL, FORBIDDEN, status=403, verified=True),
                                                  helper_r(HTTPS_URL, details(HTTPS_URL, REAL, verified=True))],
     "origin_refused", None, None, ["403", "not the cause"]),
    ("no helper: plain HTTP unlike the verified site", [*BASE, page_r(HTTP_URL, BLOCK_EN), own_r(REAL)],
     "http_unverified_diff", None, None, ["without a test helper"]),
    ("no helper: plain HTTP like the verified site", [*BASE, page_r(HTTP_URL, REAL), own_r(REAL)],
     "accessible", True, False, []),
    ("helper failed, own reference used", [*BASE, page_r(HTTP_URL, BLOCK_EN), own_r(REAL),
                                           _r(PAGE_CONTROL, PageControlDetails("h", HTTP_URL), "connection_reset",
                                              role="control")],
     "http_unverified_diff", None, None, []),
    ("another language: explained", [*TLS, page_r(HTTPS_URL, article("Nachrichten Startseite", "de", "Heute"),
                                                   verified=True),
                                      helper_r(HTTPS_URL, details(HTTPS_URL, REAL, verified=True))],
     "accessible", True, False, ["another language (de against en)"]),
    ("regional redirect: explained", [*BASE, page_r(HTTP_URL, "", status=302, location="http://de.telegram.test/"),
                                      helper_r(HTTP_URL, details(HTTP_URL, REAL))],
     "accessible", True, False, ["within the site"]),
    ("403 to non-browsers everywhere", [*TLS, page_r(HTTPS_URL, FORBIDDEN, status=403, verified=True),
                                        helper_r(HTTPS_URL, details(HTTPS_URL, FORBIDDEN, status=403,
                                                                    verified=True))],
     "accessible", True, False, []),
    ("403 to non-browsers, no helper", [*TLS, page_r(HTTPS_URL, FORBIDDEN, status=403, verified=True)],
     "accessible", True, False, []),
]


@pytest.mark.parametrize(("name", "results", "rule", "accessible", "blocking", "words"), CASES,
                         ids=[c[0] for c in CASES])
def test_page_rows(name: str, results: list[CheckResult[Any]], rule: str, accessible: bool | None,
                   blocking: object, words: list[str]) -> None:
    verdict = decide(TARGET, results, Controls(network_ok=True), 0)
    assert (verdict.rule, verdict.accessible, verdict.blocking) == (rule, accessible, blocking), verdict.reason
    for word in words:
        assert word in verdict.reason, (word, verdict.reason)


def test_unexplained_difference_is_recorded_for_researchers() -> None:
    results = [*BASE, page_r(HTTP_URL, BLOCK_EN), helper_r(HTTP_URL, details(HTTP_URL, REAL))]
    verdict = decide(TARGET, results, Controls(network_ok=True), 0)
    diff = verdict.details["http_diff"]
    assert diff["probe"]["title"] == "Access denied" and diff["probe"]["body_sha256"] == f"sha-{len(BLOCK_EN)}"
    assert diff["control"]["title"] == "Example News - Home"
    assert set(verdict.evidence) == {results[-2].id, results[-1].id}
