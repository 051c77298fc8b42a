"""The layers stay true: the import-linter contracts in pyproject.toml hold, and no import circle exists.

The contracts (``[tool.importlinter]``) name the layers from the command line down to ``probe.core``;
a module may import its own layer and the layers below it, never one above. Lazy imports inside
functions count: grimp reads every import statement of a module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _broken_contracts(config: Path, cwd: Path, pythonpath: Path) -> list[str]:
    """Names of the contracts of ``config`` that the code breaks (import-linter's own command)."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(config), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(pythonpath)}, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return [line.removesuffix(" BROKEN") for line in done.stdout.splitlines() if line.endswith(" BROKEN")]


def _circles(package: str) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), or a module importing itself."""
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_layer_imports_a_higher_one() -> None:
    assert _broken_contracts(ROOT / "pyproject.toml", ROOT, ROOT) == []


def test_no_import_circle() -> None:
    assert _circles("probe") == []


def _fake_package(root: Path, lazy_upward_import: bool) -> None:
    """A two-layer package, ``fakelayers.core`` below ``fakelayers.service``, and a config naming them."""
    pkg = root / "fakelayers"
    (pkg / "core").mkdir(parents=True)
    (pkg / "service").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "service" / "__init__.py").write_text("from fakelayers import core\n")
    body = "def f():\n    from fakelayers import service\n    return service\n" if lazy_upward_import else ""
    (pkg / "core" / "__init__.py").write_text(body)
    (root / "layers.toml").write_text(
        '[tool.importlinter]\nroot_package = "fakelayers"\n\n[[tool.importlinter.contracts]]\n'
        'name = "layers"\ntype = "layers"\nlayers = ["fakelayers.service", "fakelayers.core"]\n')


@pytest.mark.parametrize("upward", [False, True])
def test_the_checks_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upward: bool) -> None:
    """The same two checks catch a lower layer that imports a higher one, even lazily inside a function."""
    _fake_package(tmp_path, lazy_upward_import=upward)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert _broken_contracts(tmp_path / "layers.toml", tmp_path, tmp_path) == (["layers"] if upward else [])
    assert _circles("fakelayers") == ([["fakelayers.core", "fakelayers.service"]] if upward else [])
