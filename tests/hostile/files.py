"""Bad targets files, each valid up to its attack, and the problem the loader must name.

Before the limits: the alias bomb spun forever, the NUL byte and the deep nesting gave
tracebacks (ReaderError, RecursionError), the 5 MB file took 25 s and 418 MB, and the
FIFO blocked forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

GOOD_TARGET = "  - {name: a, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp]}\n"
HEAD = "settings: {interval: 1, jitter: 0}\ntargets:\n"


def _alias_bomb(path: Path) -> None:
    # 10 levels of 9 aliases each: 9**10 (3.5 billion) "lol"s once expanded, in a 1 KB file.
    levels = ['        l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"        l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    target = ("  - name: b\n    service: svc\n    category: messaging\n    addresses: [127.0.0.1]\n"
              "    checks: [circumvention]\n    options:\n      laughs:\n")
    path.write_text(HEAD + GOOD_TARGET + target + "\n".join(levels) + "\n")


def _nul(path: Path) -> None:
    path.write_text(HEAD + GOOD_TARGET + "  - {name: b\x00, service: svc, checks: [tcp]}\n")


def _nested(path: Path) -> None:
    path.write_text(HEAD + GOOD_TARGET + "  - " + "[" * 50_000 + "]" * 50_000 + "\n")


def _big(path: Path) -> None:
    # 5 MB of valid targets: past the 1 MiB limit.
    rows = "".join(f"  - {{name: t{i}, service: svc, category: x, addresses: [127.0.0.1], checks: [tcp]}}\n"
                   for i in range(60_000))
    path.write_text(HEAD + rows)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


#: name -> (writer, a fragment the error message must contain)
BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "alias-bomb": (_alias_bomb, "values once aliases are expanded"),
    "nul-byte": (_nul, "character #x0000 is not allowed"),
    "nested-50000": (_nested, "nest"),
    "five-mb": (_big, "larger than 1048576 bytes"),
    "fifo": (_fifo, "is not a regular file"),
}


def write_bad(name: str, directory: Path) -> Path:
    path = directory / f"{name}.yaml"
    BAD_FILES[name][0](path)
    return path
