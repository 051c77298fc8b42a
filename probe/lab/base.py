"""What the lab and its techniques both need: the error, the command runner, the handle, the registry.

:mod:`probe.lab.lab` builds and drives the lab; :mod:`probe.lab.techniques` applies censorship
techniques to it and registers them in :data:`TECHNIQUES`. Both import this module and neither
imports the other's internals; ``Lab.apply`` looks a technique up here by name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Technique = Callable[..., None]
TECHNIQUES: dict[str, Technique] = {}  # filled by probe.lab.techniques (imported by probe.lab)


class LabError(RuntimeError):
    """The lab cannot be built or driven; the message says which command failed and why."""


def run(argv: list[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


@dataclass
class Handle:
    """One applied technique, with what undoes it."""

    technique: str
    params: dict[str, Any]
    undo: list[list[str]] = field(default_factory=list)
    rules: dict[str, Any] = field(default_factory=dict)  # entries added to rules.json
    behaviour: dict[str, Any] = field(default_factory=dict)  # entries added to behaviour.json
    pids: list[int] = field(default_factory=list)
