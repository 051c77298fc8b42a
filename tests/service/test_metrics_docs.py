"""docs/metrics.md lists exactly the ``probe_*`` families the daemon's ``/metrics`` exports, and its
cardinality figures are those of the default targets."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.synthetic_metrics import daemon_metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented_families() -> set[str]:
    """The first column of the daemon's family tables (``| `probe_...` | type | ...``); the sections
    from ``## Collector`` on are the collector's own series, which the daemon does not export."""
    daemon_part = DOC.read_text().split("\n## Collector", 1)[0]
    return set(re.findall(r"^\| `(probe_[a-z_]+)` \|", daemon_part, re.M))


def exported_families(text: str) -> set[str]:
    """Family names as documented: counters with their ``_total``, histograms by their base name."""
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("probe_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_exported_family_is_documented_and_every_documented_one_exported() -> None:
    exported = exported_families(daemon_metrics(failures_per_check=1, events=1, extras=True))
    documented = documented_families()
    assert exported - documented == set(), "exported but not in docs/metrics.md"
    assert documented - exported == set(), "in docs/metrics.md but never exported by /metrics"


def test_documented_series_per_probe_match_the_default_targets() -> None:
    series = sum(len(f.samples) for f in text_string_to_metric_families(daemon_metrics()))
    text = DOC.read_text()
    match = re.search(r"default targets \((\d+) targets\) export ([\d,]+) series", text)
    assert match, "docs/metrics.md states the series of a probe with the default targets"
    from probe.core import config

    assert int(match.group(1)) == len(config.load(config.DEFAULT_TARGETS).targets)
    assert int(match.group(2).replace(",", "")) == series
