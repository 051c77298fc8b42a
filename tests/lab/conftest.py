"""Lab fixtures: one lab per test module, torn down even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (CI runs as root)")
    from probe.lab import Lab

    prefix = "t" + request.module.__name__.rsplit(".", 1)[-1].replace("test_", "")[:5] + str(os.getpid() % 100)
    with Lab(prefix) as running:
        yield running
