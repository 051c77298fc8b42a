"""The page comparison (probe/analysis/httpdiff.py), table-driven: block pages no fingerprint knows, and
the benign differences (dynamic content, language, regional redirects, CDN challenges, 403 to non-browsers)."""

from __future__ import annotations

import re

import pytest

from probe.analysis import httpdiff
from probe.analysis.httpdiff import Page, compare

SITE = "http://news.example.test/"


def page(body: str, status: int = 200, url: str = SITE, location: str | None = None,
         headers: tuple[str, ...] = ("date", "content-type", "x-request-id"), verified: bool = False,
         content_language: str | None = None, truncated: bool = False) -> Page:
    raw = body.encode()
    found = re.search(r"<title>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
    return Page(url=url, status=status, body_length=len(raw), truncated=truncated,
                title=found.group(1).strip() if found else None, header_names=frozenset(headers),
                location=location, sha256=str(hash(raw)), lang=httpdiff.language(raw, content_language),
                shape=httpdiff.shape(raw), verified=verified)


def article(title: str, lang: str = "en", words: str = "Today's top stories", extra: str = "") -> str:
    items = "".join(f"<li><a href='/a/{i}'>{words} {i}</a><span class='t'>{extra}</span></li>" for i in range(30))
    return (f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>{title}</title>"
            "<link rel='stylesheet' href='/s.css'><script src='/app.js'></script></head><body>"
            f"<header><nav><a href='/'>{title}</a><a href='/world'>World</a></nav></header>"
            f"<main><h1>{words}</h1><ul>{items}</ul></main><footer><p>(c) news</p></footer></body></html>")


REAL = article("Example News - Home")
BLOCK_EN = ("<html><head><title>Access denied</title></head><body><h2>Access denied</h2>"
            "<p>The requested resource is blocked by order of the regulator.</p></body></html>")
BLOCK_FA = ("<html dir='rtl'><head><meta charset='utf-8'><title>دسترسی غیرمجاز</title></head><body>"
            "<iframe src='http://blocked.isp.test/' width='100%' height='100%'></iframe></body></html>")
BLOCK_ZH = ("<html><head><title>网站无法访问</title></head><body><div><p>根据相关法律法规，该网站暂时无法访问。"
            "</p></div></body></html>")
# A block page padded to the length of the site: OONI's length check alone would call it the same page.
BLOCK_SAME_LENGTH = BLOCK_EN.replace("</body>", "<!--" + "x" * (len(REAL) - len(BLOCK_EN) - 7) + "--></body>")
NO_TITLE_SMALL = "<html><body><p>blocked</p></body></html>"
CHALLENGE = ("<html><head><title>Just a moment...</title></head><body><noscript>Enable JavaScript</noscript>"
             "<script>challenge()</script></body></html>")
FORBIDDEN = "<html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>"

CASES = [
    # name, probe page, reference hops, expected outcome
    ("identical", page(REAL), [page(REAL)], "same"),
    ("dynamic body: timestamps, random ids, twice the length",
     page(article("Example News - Home", extra="1764490000.123 id=9f8e7d6c5b4a" * 6)),
     [page(article("Example News - Home", extra="1764490042.977 id=0a1b2c3d4e5f"))], "same"),
    ("dynamic title digits", page(article("Example News - Home 2026-11-30 07:25")),
     [page(article("Example News - Home 2026-11-30 07:26"))], "same"),
    ("verified origin, title of the moment, same structure and length",
     page(article("Example News - Storm hits the coast"), verified=True),
     [page(article("Example News - Elections tomorrow"), verified=True)], "explained"),
    ("plain HTTP, same structure and length, another title", page(article("Example News - Storm hits the coast")),
     [page(article("Example News - Elections tomorrow"))], "different"),
    ("unknown block page, English", page(BLOCK_EN), [page(REAL)], "different"),
    ("unknown block page, Persian iframe", page(BLOCK_FA), [page(REAL)], "different"),
    ("unknown block page, Chinese", page(BLOCK_ZH), [page(REAL)], "different"),
    ("block page as long as the site (OONI's length check passes)", page(BLOCK_SAME_LENGTH), [page(REAL)],
     "different"),
    ("block page with the site's uncommon header names", page(BLOCK_EN, headers=("x-request-id",)),
     [page(REAL, headers=("x-request-id",))], "different"),
    ("no title, much shorter", page(NO_TITLE_SMALL), [page(REAL.replace("<title>Example News - Home</title>", ""))],
     "different"),
    ("no titles, similar length", page("<html><body><p>data 1234</p></body></html>"),
     [page("<html><body><p>data 5678</p></body></html>")], "same"),
    ("another language, same structure",
     page(article("Beispiel Nachrichten - Startseite", "de", "Heutige Schlagzeilen")), [page(REAL)], "explained"),
    ("another language by Content-Language",
     page(article("Beispiel Nachrichten - Startseite", "", "Heutige Schlagzeilen").replace(" lang=''", ""),
          content_language="de-DE"), [page(REAL.replace(" lang='en'", ""), content_language="en")], "explained"),
    ("a block page in another language is not a translation",
     page(BLOCK_EN.replace("<html>", "<html lang='ru'>")), [page(REAL)], "different"),
    ("regional redirect: subdomain", page("", 302, location="http://de.news.example.test/"), [page(REAL)],
     "explained"),
    ("regional redirect: country domain", page("", 302, url="http://www.example.com/",
                                               location="https://www.example.co.uk/"),
     [page(REAL, url="http://www.example.com/")], "explained"),
    ("redirect to another domain", page("", 302, location="http://warning.isp.test/?site=news.example.test"),
     [page(REAL)], "different"),
    ("redirect to another domain the reference gets too", page("", 301, location="https://moved.test/"),
     [page("", 301, location="https://moved.test/"), page(REAL, url="https://moved.test/")], "same"),
    ("HTTPS upgrade, like the reference", page("", 301, location="https://news.example.test/"),
     [page("", 301, location="https://news.example.test/"), page(REAL, url="https://news.example.test/")], "same"),
    ("the reference upgraded to HTTPS, the probe got the page", page(REAL),
     [page("", 301, location="https://news.example.test/"), page(REAL, url="https://news.example.test/")], "same"),
    ("the reference upgraded to HTTPS, the probe got a block page", page(BLOCK_EN),
     [page("", 301, location="https://news.example.test/"), page(REAL, url="https://news.example.test/")],
     "different"),
    ("CDN challenge that the reference gets too", page(CHALLENGE, 503, headers=("cf-ray", "server")),
     [page(CHALLENGE, 503, headers=("cf-ray", "server"))], "same"),
    ("403 to non-browsers, everywhere", page(FORBIDDEN, 403, verified=True), [page(FORBIDDEN, 403)], "same"),
    ("403 here, 200 at the reference", page(FORBIDDEN, 403), [page(REAL)], "different"),
    ("451 here, 200 at the reference", page(BLOCK_EN, 451), [page(REAL)], "different"),
    ("the reference got a 500", page(BLOCK_EN), [page("oops", 500)], "incomparable"),
    ("the reference got nothing", page(BLOCK_EN), [Page(url=SITE, status=None)], "incomparable"),
    ("both truncated at the cap", page(REAL, truncated=True), [page(REAL + "x" * 5000, truncated=True)], "same"),
]


@pytest.mark.parametrize(("name", "probe", "hops", "outcome"), CASES, ids=[c[0] for c in CASES])
def test_compare(name: str, probe: Page, hops: list[Page], outcome: str) -> None:
    result = compare(probe, hops)
    assert result.outcome == outcome, (name, result.why, result.checks)


def test_evidence_names_both_sides() -> None:
    evidence = compare(page(BLOCK_EN), [page(REAL)]).evidence()
    assert evidence["probe"]["title"] == "Access denied" and evidence["control"]["title"] == "Example News - Home"
    assert evidence["probe"]["body_length"] == len(BLOCK_EN) and evidence["control"]["status"] == 200
    assert evidence["checks"]["title_match"] is False and evidence["checks"]["status_code_match"] is True


@pytest.mark.parametrize(("host", "expected"), [
    ("www.example.co.uk", "example"), ("example.com", "example"), ("de.news.example.test", "example"),
    ("example.com.br", "example"), ("localhost", "localhost"), ("a.b.c.gov.uk", "c"),
])
def test_site(host: str, expected: str) -> None:
    assert httpdiff.site(host) == expected


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("Example News - Home", "example news &ndash; home", True),
    ("Доступ ограничен", "Example News", False),
    ("", None, None),
    ("Telegram: Contact @durov", "Telegram: Contact @durov 2", True),
    ("A B", "C D", None),  # no word long enough on either side
])
def test_title_match(a: str | None, b: str | None, expected: bool | None) -> None:
    assert httpdiff.title_match(a, b) is expected


def test_length_match_tolerance() -> None:
    ref = Page(SITE, 200, body_length=1000)
    assert httpdiff.length_match(Page(SITE, 200, body_length=701), ref) is True
    assert httpdiff.length_match(Page(SITE, 200, body_length=700), ref) is False  # strictly above 0.7, as OONI
    assert httpdiff.length_match(Page(SITE, 200, body_length=0), Page(SITE, 200, body_length=0)) is None


def test_unknown_pages_groups_by_title_and_hash() -> None:
    def verdict(target: str, title: str, sha: str, rule: str = "http_diff") -> dict[str, object]:
        return {"target": target, "probe_id": "p1", "measurement_start_time": "2026-11-30T07:00:00.000000Z",
                "test_keys": {"rule": rule, "http_diff": {"probe": {"url": "http://x.test/", "title": title,
                                                                    "body_sha256": sha}}}}

    records = [verdict("a", "Access denied", "h1"), verdict("b", "Access denied", "h1"),
               verdict("c", "Blocked", "h2"), verdict("d", "Ignored", "h3", rule="accessible")]
    found = httpdiff.unknown_pages(records)
    assert [(u.title, u.count, u.targets) for u in found] == [("Access denied", 2, ("a", "b")),
                                                              ("Blocked", 1, ("c",))]
