"""Block page fingerprints, kept as data in ``probe/data/blockpages.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

FILE = Path(__file__).resolve().parent.parent / "data" / "blockpages.yaml"
MATCHERS = ("body", "title", "location", "header")


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
