"""`probe collector` without the collector extra says what to install, instead of a traceback."""

from __future__ import annotations

import sys

import pytest

from probe.cli import main


def test_collector_without_its_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "starlette" or m.startswith(("starlette.", "probe.fleet.collector"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if not installed
    assert main(["collector", "serve", "--db", "postgresql://u@127.0.0.1/x", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "'collector' extra" in err and "pip install '.[collector]'" in err
