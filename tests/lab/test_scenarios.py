"""Each seed incident replays in the lab, and every phase's verdicts match the file's expectations.

One lab for the module (tests/lab/conftest.py). The timeline is compressed further
(``SPEED``) so that a replay takes as long as its measurements, not its waits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from probe.lab.scenario import load, replay

pytestmark = pytest.mark.lab

SEEDS = sorted((Path(__file__).resolve().parents[2] / "seeds").glob("*.yaml"))
# Known lab bugs that make a seed's observed verdicts contradict its techniques. The expectations
# stay as the techniques demand; strict xfail turns into a failure as soon as the lab is fixed.
LAB_BUGS: dict[str, str] = {}  # seed stem -> a known lab bug (the test is then strict-xfail)
SPEED = 20.0
MAX_REPLAY_SECONDS = 150  # "about two minutes" per scenario, with room for a slow CI machine


def _seed(path: Path) -> Any:
    if path.stem not in LAB_BUGS:
        return path
    return pytest.param(path, marks=pytest.mark.xfail(reason=LAB_BUGS[path.stem], raises=AssertionError,
                                                      strict=True))


@pytest.mark.parametrize("path", [_seed(p) for p in SEEDS], ids=lambda p: p.stem)
def test_seed_replays_as_expected(lab: Any, path: Path) -> None:
    scenario = load(path)
    try:
        report = replay(scenario, lab, speed=SPEED, out=sys.stdout)
    finally:
        lab.clear()  # whatever happened, the next seed starts from a clean censor
    assert len(report.phases) == len(scenario.phases)
    assert report.passed, "\n" + report.table()
    assert report.seconds < MAX_REPLAY_SECONDS
    assert lab.handles == [], "the replay removed every technique it applied"
