"""Block page fingerprints, kept as data in ``probe/data/blockpages.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

FILE = Path(__file__).resolve().parent.parent / "data" / "blockpages.yaml"
MATCHERS = ("body", "title", "location", "header")
SCAN_BYTES = 65536  # bytes of a page searched for its title and for fingerprints


@dataclass(frozen=True)
class Fingerprint:
    name: str
    country: str
    body: tuple[str, ...] = ()
    title: tuple[str, ...] = ()
    location: tuple[str, ...] = ()
    header: tuple[str, ...] = ()


@cache
def fingerprints(path: Path = FILE) -> tuple[Fingerprint, ...]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for i, entry in enumerate(entries):
        unknown = set(entry) - {"name", "country", *MATCHERS}
        if unknown or "name" not in entry:
            raise ValueError(f"{path}: entry {i}: bad keys {sorted(unknown) or 'missing name'}")
        out.append(
            Fingerprint(
                entry["name"], entry.get("country", "ZZ"),
                **{m: tuple(s.lower() for s in entry.get(m, ())) for m in MATCHERS},
            )
        )
    return tuple(out)


def match(
    body: str, title: str | None, location: str | None, headers: Mapping[str, str]
) -> str | None:
    """The name of the first fingerprint the response matches, or None."""
    body_l, title_l, loc_l = body.lower(), (title or "").lower(), (location or "").lower()
    header_lines = [f"{k}: {v}".lower() for k, v in headers.items()]
    for fp in fingerprints():
        if (
            any(s in body_l for s in fp.body)
            or any(s in title_l for s in fp.title)
            or any(s in loc_l for s in fp.location)
            or any(s in line for s in fp.header for line in header_lines)
        ):
            return fp.name
    return None


def page_title(body: bytes) -> str | None:
    """The first ``<title>`` of a page's first 64 KiB, whitespace folded, at most 200 characters.

    Safe on hostile bytes: three ``find`` calls, linear in the scanned prefix (a
    backtracking regex took 5 s on a page of repeated ``<title>`` tags, on the event loop).
    """
    head = body[:SCAN_BYTES].lower()  # ASCII-only lowering keeps byte offsets
    start = head.find(b"<title")
    close = head.find(b">", start) if start != -1 else -1
    end = head.find(b"</title", close) if close != -1 else -1
    if end == -1:
        return None
    return " ".join(body[close + 1 : end].decode("utf-8", "replace").split())[:200]
