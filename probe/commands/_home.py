"""Where a volunteer's probe keeps its files (XDG base directories), and which targets file is in use.

``probe init`` writes ``$XDG_CONFIG_HOME/probe/targets.yaml`` (default ``~/.config/probe``) and
points the store at ``$XDG_DATA_HOME/probe/probe.sqlite`` (default ``~/.local/share/probe``).
Every command that reads a targets file takes ``--targets FILE`` first, else that file when it
exists, else the targets bundled with the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.core import config as config_mod


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    return Path(value) if value and Path(value).is_absolute() else Path.home() / fallback


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "probe"


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "probe"


def user_targets() -> Path:
    return config_dir() / "targets.yaml"


def targets_in_use(given: str | None) -> tuple[Path, str]:
    """The targets file a command reads and why: ``--targets``, the user's (``probe init``), or the bundled."""
    if given:
        return Path(given), "--targets"
    mine = user_targets()
    if mine.is_file():
        return mine, "written by probe init"
    return config_mod.DEFAULT_TARGETS, "bundled with the package; `probe init` makes your own copy"


def load_config(given: str | None) -> config_mod.Config:
    return config_mod.load(targets_in_use(given)[0])
