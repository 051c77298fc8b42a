"""Is the page the probe got the page an uncensored vantage point gets? A pure comparison.

OONI's web_connectivity compares the probe's final HTTP response with the test helper's for the
same URL: status code, body length ratio (> 0.7), title (its long words) and the set of uncommon
header names, and calls the page "no diff" when the status matches and any one of the other three
does. This module keeps those tolerances and closes their known gaps (docs/verdicts.md):

- titles are compared by words (entities decoded, NFKC, case-folded, digits dropped) with a
  Jaccard tolerance, and a title that differs is not outvoted by a similar length or by shared
  header names: a short block page often has the length of a short site, and a censor's web
  server often shares its header names;
- the page's structure (its sequence of tag names, as a bottom-k MinHash of tag shingles) tells a
  translated page (same structure, another ``lang``) from another page;
- a redirect is judged by where it goes: within the same site (another subdomain or a country
  domain of the same name: a regional redirect) it is explained; to another domain it is a block
  page by redirect, unless the helper is sent there too;
- a 451 (RFC 7725) is its own signal, and a 4xx/5xx status the helper also gets (a CDN challenge,
  an origin that refuses non-browsers) is the same page.

The outcome is one of ``same``, ``explained`` (different, for a benign reason that it names),
``different`` (unexplained) or ``incomparable`` (the reference has no usable answer). Which verdict
row that becomes depends on whether the probe's page came over verified TLS: see
probe/analysis/verdict.py.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

#: OONI's proportion: lengths match when min/max is strictly above this.
BODY_PROPORTION = 0.7
#: Titles match when the Jaccard index of their words is at least this.
TITLE_JACCARD = 0.5
#: Structures match when the estimated Jaccard index of their tag shingles is at least this.
STRUCTURE_JACCARD = 0.5
#: Words shorter than this are ignored in titles (OONI: 5 bytes; here characters, so that a
#: non-Latin word is not longer than its Latin translation).
TITLE_WORD = 3
SHINGLE = 4  # tags per shingle
SIGNATURE = 64  # bottom-k MinHash size
SCAN = 65536  # bytes of a body that title, language and structure are read from
#: OONI's 25 header names that every server may send; the rest are "uncommon".
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires",
    "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options", "etag",
    "x-content-type-options", "age", "via", "p3p", "x-xss-protection", "content-language", "cf-ray",
    "strict-transport-security", "link", "x-varnish",
})
#: Second-level labels under which country domains register names (example.co.uk, example.com.br).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go", "gob", "nic"})
_TAG = re.compile(rb"<([a-zA-Z][a-zA-Z0-9]{0,15})")
_LANG = re.compile(rb"<html[^>]{0,512}?\blang\s*=\s*[\"']?([a-zA-Z]{2,3})", re.IGNORECASE)
_WORD = re.compile(r"\w+")

#: Check names of the two references a page is compared with: the test helper's fetch
#: (probe/checks/control.py) and, without a helper, the probe's own fetch over verified TLS (probe/pipeline.py).
PAGE_CONTROL, HTTPS_CONTROL = "web_control", "https_control"

Outcome = Literal["same", "explained", "different", "incomparable"]


@dataclass(frozen=True)
class Page:
    """One HTTP response as the comparison sees it, from either vantage point."""

    url: str
    status: int | None
    body_length: int = 0
    truncated: bool = False
    title: str | None = None
    header_names: frozenset[str] = frozenset()
    location: str | None = None
    sha256: str | None = None
    lang: str | None = None
    shape: tuple[int, ...] = ()
    verified: bool = False  # came over a TLS session verified for the host name

    @classmethod
    def from_details(cls, d: Any) -> Page:
        """From probe.checks.http.HTTPDetails (or the helper's JSON hop, see :func:`from_json`)."""
        return cls(url=d.url, status=d.status, body_length=d.body_length, truncated=d.body_truncated,
                   title=d.title, header_names=frozenset(getattr(d, "header_names", ()) or ()),
                   location=d.location, sha256=d.body_sha256, lang=getattr(d, "lang", None),
                   shape=tuple(getattr(d, "shape", ()) or ()), verified=d.tls_verified)

    @classmethod
    def from_json(cls, hop: Mapping[str, Any]) -> Page:
        return cls(url=str(hop.get("url", "")), status=hop.get("status"), body_length=int(hop.get("body_length") or 0),
                   truncated=bool(hop.get("body_truncated")), title=hop.get("title"),
                   header_names=frozenset(str(h).lower() for h in hop.get("header_names") or ()),
                   location=hop.get("location"), sha256=hop.get("body_sha256"), lang=hop.get("lang"),
                   shape=tuple(int(x) for x in hop.get("shape") or ()), verified=bool(hop.get("tls_verified")))


@dataclass(frozen=True)
class Comparison:
    outcome: Outcome
    why: str
    checks: Mapping[str, bool | None] = field(default_factory=dict)
    probe: Page | None = None
    control: Page | None = None

    def evidence(self) -> dict[str, Any]:
        """What a verdict keeps: both statuses, titles, lengths, hashes, and the checks."""
        out: dict[str, Any] = {"outcome": self.outcome, "why": self.why, "checks": dict(self.checks)}
        for side, page in (("probe", self.probe), ("control", self.control)):
            if page is not None:
                out[side] = {"url": page.url, "status": page.status, "title": page.title,
                             "body_length": page.body_length, "body_sha256": page.sha256,
                             "location": page.location, "lang": page.lang}
        return out


# -- what is read from a body (used by probe.checks.http on both vantage points) -----------------


def shape(body: bytes) -> tuple[int, ...]:
    """The page's structure: a bottom-k MinHash of shingles of its tag names (first 64 KiB)."""
    tags = [m.group(1).lower() for m in _TAG.finditer(body[:SCAN])]
    if not tags:
        return ()
    shingles = {b"/".join(tags[i:i + SHINGLE]) for i in range(max(1, len(tags) - SHINGLE + 1))}
    hashes = sorted({int.from_bytes(hashlib.blake2b(s, digest_size=4).digest(), "big") for s in shingles})
    return tuple(hashes[:SIGNATURE])


def language(body: bytes, content_language: str | None) -> str | None:
    """The page's primary language: ``<html lang>``, else the Content-Language header."""
    found = _LANG.search(body[:SCAN])
    if found:
        return found.group(1).decode("ascii").lower()
    if content_language:
        return content_language.split(",")[0].split("-")[0].strip().lower() or None
    return None


# -- the four checks and the extras ---------------------------------------------------------------


def title_words(title: str | None) -> frozenset[str]:
    text = unicodedata.normalize("NFKC", html.unescape(title or "")).casefold()
    return frozenset(w for w in _WORD.findall(text) if len(w) >= TITLE_WORD and not w.isdigit())


def title_match(a: str | None, b: str | None) -> bool | None:
    """Jaccard of title words >= TITLE_JACCARD; None when neither has a word to compare."""
    wa, wb = title_words(a), title_words(b)
    if not wa and not wb:
        return None
    return len(wa & wb) / len(wa | wb) >= TITLE_JACCARD


def length_match(probe: Page, control: Page) -> bool | None:
    """OONI's min/max > 0.7; a truncated side is compared up to its cap; None when a body is empty."""
    a, b = probe.body_length, control.body_length
    if probe.truncated:
        b = min(b, a)
    if control.truncated:
        a = min(a, b)
    if a <= 0 and b <= 0:
        return None
    if a <= 0 or b <= 0:
        return False
    return min(a, b) / max(a, b) > BODY_PROPORTION


def headers_match(probe: Page, control: Page) -> bool | None:
    """OONI: the same set of names, or a shared uncommon name; None when a side has none."""
    if not probe.header_names or not control.header_names:
        return None
    if probe.header_names == control.header_names:
        return True
    return bool((probe.header_names - COMMON_HEADERS) & (control.header_names - COMMON_HEADERS))


def structure_match(a: Sequence[int], b: Sequence[int]) -> bool | None:
    """Estimated Jaccard of two bottom-k signatures >= STRUCTURE_JACCARD; None if either is empty."""
    if not a or not b:
        return None
    sa, sb = set(a), set(b)
    union = sorted(sa | sb)[:SIGNATURE]
    both = sum(1 for h in union if h in sa and h in sb)
    return both / len(union) >= STRUCTURE_JACCARD


def site(host: str) -> str:
    """The name a site is registered under, without its suffix: ``www.example.co.uk`` -> ``example``.

    A small stand-in for the public suffix list that is enough to tell a regional variant of a site
    (another subdomain, another country domain of the same name) from another domain.
    """
    labels = [x for x in host.lower().rstrip(".").split(".") if x]
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:  # noqa: PLR2004
        return labels[-3]
    return labels[-2] if len(labels) >= 2 else (labels[0] if labels else "")  # noqa: PLR2004


def same_site(a: str, b: str) -> bool:
    ha, hb = urlsplit(a).hostname or "", urlsplit(b).hostname or ""
    return bool(ha) and site(ha) == site(hb)


def _redirect(status: int | None) -> bool:
    return status in (301, 302, 303, 307, 308)


def _title(page: Page) -> str:
    return repr(page.title) if page.title else "no title"


def describe(page: Page) -> str:
    return f"{page.status} {_title(page)} ({page.body_length} bytes)"


# -- the comparison ------------------------------------------------------------------------------


def compare(probe: Page, hops: Sequence[Page]) -> Comparison:
    """The probe's response against the reference's redirect chain (``hops[0]`` answered the same URL).

    The reference is the test helper's fetch from beyond the censor, or (without a helper) the
    probe's own fetch of the same URL over verified TLS.
    """
    if not hops or hops[0].status is None:
        return Comparison("incomparable", "the reference got no answer", probe=probe)
    first = hops[0]
    if _redirect(probe.status) and probe.location:
        return _compare_redirect(probe, hops)
    ref = first
    if _redirect(first.status) and len(hops) > 1 and hops[-1].status is not None \
            and same_site(hops[-1].url, probe.url):
        ref = hops[-1]  # the reference was sent on within the site (its own country's version, or HTTPS)
    checks: dict[str, bool | None] = {
        "status_code_match": probe.status == ref.status,
        "body_length_match": length_match(probe, ref),
        "title_match": title_match(probe.title, ref.title),
        "headers_match": headers_match(probe, ref),
        "structure_match": structure_match(probe.shape, ref.shape),
    }

    def result(outcome: Outcome, why: str) -> Comparison:
        return Comparison(outcome, why, checks, probe, ref)

    if probe.status != ref.status:
        if ref.status is None or ref.status // 100 != 2:  # noqa: PLR2004
            return result("incomparable", f"the reference got {describe(ref)}, not a page to compare with")
        return result("different", f"status {probe.status} where the reference got {ref.status}")
    if checks["title_match"] is True:
        return result("same", "same status and title")
    if checks["title_match"] is False:
        if probe.lang and ref.lang and probe.lang != ref.lang and checks["structure_match"] is not False:
            return result("explained", f"the same page in another language ({probe.lang} against {ref.lang})")
        if probe.verified and checks["structure_match"] and checks["body_length_match"]:
            # Only the origin writes a verified page: one with the same structure and length is the
            # same page with a title of the moment. A censor's page over plain HTTP gets no such benefit.
            return result("explained", "the same structure and length with another title (dynamic content)")
        mine = f"title {probe.title!r}" if probe.title else "no title"
        return result("different", f"{mine} where the reference has {_title(ref)}")
    if checks["body_length_match"] or checks["structure_match"]:
        return result("same", "same status, no titles, and a similar length or structure")
    if checks["body_length_match"] is None and checks["structure_match"] is None \
            and checks["headers_match"] is not False:
        return result("same", "same status, and no title, body or header names that differ")
    return result("different", f"no titles, and {probe.body_length} bytes against {ref.body_length}")


def _compare_redirect(probe: Page, hops: Sequence[Page]) -> Comparison:
    assert probe.location is not None
    dest = urljoin(probe.url, probe.location)
    first = hops[0]
    checks: dict[str, bool | None] = {"status_code_match": probe.status == first.status}
    where = urlsplit(dest).hostname or dest
    if any(same_site(dest, h.url) for h in hops[1:]) or (first.location and same_site(
            dest, urljoin(first.url, first.location))):
        return Comparison("same", f"the reference is redirected to {where} too", checks, probe, first)
    if same_site(dest, probe.url):
        return Comparison("explained", f"a redirect within the site, to {where} (a regional or HTTPS version)",
                          checks, probe, first)
    return Comparison("different", f"a redirect to another domain, {where}, where the reference got "
                      f"{describe(first)}", checks, probe, first)


# -- the researcher's view: unknown block pages, most common first ---------------------------------

#: Verdict rules whose page differed from the reference without a known fingerprint.
UNKNOWN_RULES = frozenset({"http_diff", "http_unverified_diff", "origin_withheld"})


@dataclass(frozen=True)
class UnknownPage:
    title: str | None
    body_sha256: str | None
    location_host: str | None
    count: int
    targets: tuple[str, ...]
    probes: tuple[str, ...]
    last_seen: str


def unknown_pages(verdicts: Iterable[Mapping[str, Any]], limit: int = 20) -> list[UnknownPage]:
    """Group verdict records whose page differed without a fingerprint by (title, body hash, redirect host)."""
    counts: Counter[tuple[str | None, str | None, str | None]] = Counter()
    targets: dict[tuple[str | None, str | None, str | None], set[str]] = {}
    probes: dict[tuple[str | None, str | None, str | None], set[str]] = {}
    last: dict[tuple[str | None, str | None, str | None], str] = {}
    for record in verdicts:
        keys = record.get("test_keys") or {}
        diff = keys.get("http_diff")
        if keys.get("rule") not in UNKNOWN_RULES or not isinstance(diff, Mapping):
            continue
        page = diff.get("probe") or {}
        location = page.get("location")
        key = (page.get("title"), page.get("body_sha256"),
               (urlsplit(urljoin(str(page.get("url") or ""), location)).hostname if location else None))
        counts[key] += 1
        targets.setdefault(key, set()).add(str(record.get("target", "")))
        probes.setdefault(key, set()).add(str(record.get("probe_id", "")))
        last[key] = max(last.get(key, ""), str(record.get("measurement_start_time", "")))
    return [UnknownPage(k[0], k[1], k[2], n, tuple(sorted(targets[k])), tuple(sorted(probes[k])), last[k])
            for k, n in counts.most_common(limit)]
