"""End to end, classes 1 and 2 of issue 14 (probe/lab/matrix.py BLOCKPAGE_CASES): block pages that no
fingerprint knows, in several languages and shapes, injected on plain HTTP or by a redirect to another
domain, are `http-diff` against the test helper's view (inconclusive without a helper); content that a
TLS-verified origin withholds from the client's address (a 451, a "cannot be displayed" 200) is
`origin-withheld`; the benign differences (dynamic bodies, another language, a regional redirect, a CDN
challenge the helper also gets, a 403 to non-browsers) stay accessible. Each through `probe run --once`,
with the verdict, its rule and the words of its reason asserted."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from probe.analysis import blockpages
from probe.lab.censor import UNKNOWN_BLOCKPAGES
from probe.lab.matrix import BLOCKPAGE_CASES, Case, run_case

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (CI runs as root)")
    from probe.lab import Lab

    with Lab(f"bpg{os.getpid() % 100}") as running:
        yield running


def test_no_fingerprint_knows_the_lab_pages() -> None:
    """The point of the class: these pages are unknown, so only the comparison can find them."""
    for style, (_, headers, body) in UNKNOWN_BLOCKPAGES.items():
        title = body.split("<title>")[1].split("</title>")[0] if "<title>" in body else None
        assert blockpages.match(body, title, headers.get("Location"), headers) is None, style


@pytest.mark.parametrize("case", BLOCKPAGE_CASES, ids=[c.name for c in BLOCKPAGE_CASES])
def test_blockpage_case(lab, case: Case) -> None:  # type: ignore[no-untyped-def]
    observed = run_case(lab, case)
    assert observed.problems() == [], json.dumps(observed.target, ensure_ascii=False)[:3000]


def test_unknown_page_evidence_is_recorded(lab) -> None:  # type: ignore[no-untyped-def]
    """The verdict keeps both titles, lengths, statuses and the body hash, as the store and export keep them."""
    case = next(c for c in BLOCKPAGE_CASES if c.name == "blockpage-unknown-en")
    observed = run_case(lab, case)
    diff = observed.target["http_diff"]
    body = UNKNOWN_BLOCKPAGES["en"][2].encode()
    assert diff["probe"]["title"] == "Access denied" and diff["probe"]["body_length"] == len(body)
    assert diff["probe"]["body_sha256"] == __import__("hashlib").sha256(body).hexdigest()
    assert diff["control"]["title"] == "news.other.test lab" and diff["control"]["status"] == 200
