"""`probe export`: not built yet (see the issue that owns it)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("export", help="(not built yet)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("probe export: not built yet", file=sys.stderr)
    return 1
