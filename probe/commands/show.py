"""``probe show``: recent verdicts from the local store, as a table or as JSON records.

The store is ``--store PATH`` or else ``settings.store`` of the targets file
(``--targets``, default the repository's ``targets.yaml``); a relative path is
relative to the current directory, as for ``probe run``. The store is opened
read-only, so ``show`` never changes it and can run beside the daemon.

Exit codes: 0; 1 when there is no usable store (missing, newer schema); 2 when the
store is damaged (a corrupt file, or records whose envelope is missing): the message
names the store and the problem, and what can be shown is shown first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from probe.commands._cells import accessible_cell, blocking_cell
from probe.commands._home import load_config
from probe.core.records import parse_time
from probe.storage.store import Store, StoreError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "show",
        help="recent verdicts from the local store",
        description="Show the most recent verdicts from the local store, oldest first "
        "(the newest is the last line).",
    )
    add_store_arguments(parser)
    parser.add_argument("--since", metavar="T",
                        help="only verdicts at or after T (2026-04-16, RFC 3339, or 30m/24h/7d ago)")
    parser.add_argument("--target", metavar="NAME", help="only this target")
    parser.add_argument("--limit", metavar="N", type=int, default=50,
                        help="at most N verdicts, the most recent (default 50)")
    parser.add_argument("--json", action="store_true",
                        help="print the verdict records, one JSON object per line")
    parser.set_defaults(func=_run)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store`` and ``--targets``, shared by the commands that read the store."""
    parser.add_argument("--store", metavar="PATH",
                        help="SQLite store (default: settings.store of the targets file)")
    parser.add_argument("--targets", metavar="FILE",
                        help="targets file for settings.store (default: the one `probe init` wrote, else the bundled)")


def store_path(args: argparse.Namespace) -> Path:
    """``--store``, else ``settings.store`` of the targets file (ConfigError if it is bad)."""
    if args.store:
        return Path(args.store).expanduser()
    return Path(load_config(args.targets).settings.store).expanduser()


def _run(args: argparse.Namespace) -> int:
    from probe.storage.export import ExportError, parse_when

    if args.limit < 1:
        print(f"probe show: --limit {args.limit}: must be at least 1", file=sys.stderr)
        return 2
    try:
        since = parse_when(args.since) if args.since else None
    except ExportError as exc:
        print(f"probe show: {exc}", file=sys.stderr)
        return 2
    path = store_path(args)
    try:
        with Store(path, readonly=True) as store:
            newest = list(store.query(since=since, target=args.target, record_type="verdict",
                                      limit=args.limit, newest_first=True))
            damage = store.damage()
    except StoreError as exc:
        return store_failed(exc)
    verdicts = newest[::-1]
    if args.json:
        for record in verdicts:
            print(json.dumps(record, ensure_ascii=False))
    elif verdicts:
        from rich.console import Console

        Console().print(verdict_table(verdicts))
    else:
        print(f"probe show: no verdicts in {path}" + (" for these filters" if args.target or since
                                                        else ""), file=sys.stderr)
    return report_damage(damage)


def store_failed(exc: StoreError) -> int:
    """Print a store error; exit 2 for a damaged store, 1 for one that is missing or unusable."""
    print(f"probe: store error: {exc}", file=sys.stderr)
    return 2 if exc.reason == "corrupt" else 1


def report_damage(damage: list[str]) -> int:
    """Print what a read found wrong with the store (exit 2), or nothing (exit 0)."""
    for line in damage:
        print(f"probe: {line}", file=sys.stderr)
    return 2 if damage else 0


def verdict_table(verdicts: list[dict[str, Any]]) -> Any:
    """A rich table of verdict records: time, target, service, accessible, blocking, failure, reason."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Recent verdicts", title_justify="left")
    for column in ("time (UTC)", "target", "service", "accessible", "blocking"):
        table.add_column(column, no_wrap=True)
    table.add_column("failure", overflow="fold")
    table.add_column("reason", overflow="fold", ratio=1)
    for record in verdicts:
        keys = record.get("test_keys") or {}
        stamp = record.get("measurement_start_time", "")
        try:
            from probe.core.records import format_time

            when = format_time(parse_time(stamp))[:19].replace("T", " ")
        except (ValueError, TypeError):
            when = str(stamp)
        table.add_row(
            when,
            escape(str(record.get("target", ""))),
            escape(str(record.get("service", ""))),
            accessible_cell(keys.get("accessible")),
            blocking_cell(keys.get("blocking")),
            escape(str(record.get("failure") or "")),
            escape(str(keys.get("reason") or "")),
        )
    return table
