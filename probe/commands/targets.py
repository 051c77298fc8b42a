"""``probe targets validate FILE`` and ``probe targets list``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from probe.commands._home import targets_in_use
from probe.core import config as config_mod


def register(sub: Any) -> None:
    parser = sub.add_parser("targets", help="validate or list a targets file")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a targets file; errors name file, line, key and value")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(func=_validate)
    listing = actions.add_parser("list", help="list the targets of a file")
    listing.add_argument("file", metavar="FILE", nargs="?",
                         help="default: the one `probe init` wrote, else the bundled targets.yaml")
    listing.set_defaults(func=_list)


def _validate(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file)
    controls = sum(1 for t in cfg.targets if t.control)
    print(f"{cfg.path}: OK: {len(cfg.targets)} targets ({controls} controls)")
    return 0


def _list(args: argparse.Namespace) -> int:
    path, why = targets_in_use(args.file)
    cfg = config_mod.load(path)
    print(f"targets file in use: {path} ({why})")
    table = Table(title=cfg.path)
    for column in ("name", "service", "category", "host", "addresses", "ports", "checks"):
        table.add_column(column, overflow="fold")
    for t in cfg.targets:
        table.add_row(t.name, t.service, t.category, t.host or "", " ".join(t.addresses),
                      " ".join(map(str, t.ports)), " ".join(t.checks))
    Console().print(table)
    return 0
