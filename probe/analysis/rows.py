"""One row of a verdict table: the rule that matched and what it concludes.

The main table (:mod:`probe.analysis.verdict`) and the families' own tables
(:mod:`probe.analysis.circumvention`) decide with the same row, so a family's decision is adopted
by the main table as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """``rule`` names the row (docs/verdicts.md); ``accessible`` and ``blocking`` are the verdict's
    fields; ``evidence`` the ids of the results that decided it; ``failure`` the failure string that
    stands for it; ``details`` what the row measured beyond the reason's words."""

    rule: str
    accessible: bool | None
    blocking: str | bool | None
    reason: str
    evidence: tuple[str, ...] = ()
    failure: str | None = None
    details: Mapping[str, Any] | None = None
