"""A JSON file that lab processes re-read when it changes: how techniques switch at run time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class LiveJSON:
    """``current()`` is the file's content, re-read only when its mtime changes (cheap per packet)."""

    def __init__(self, path: Path, default: dict[str, Any] | None = None) -> None:
        self.path, self.mtime = path, -1.0
        self.data: dict[str, Any] = default or {}

    def current(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self.mtime:
                self.data, self.mtime = json.loads(self.path.read_text()), mtime
        except (OSError, ValueError):
            pass  # keep the last good content: a half-written file is replaced atomically soon
        return self.data
