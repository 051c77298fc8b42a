"""``probe events``: list blocking and throttling events from the local store.

The daemon detects and saves events as it measures; ``--detect`` recomputes them here from
every verdict in the store (for probes run with ``probe run --once``) and saves them first.
Detection runs over the whole history even with ``--since``, which only filters the listing,
so an event's id and bounds do not depend on the window asked for. Times are RFC 3339 UTC.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from probe.core.records import Event, format_time, parse_time


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "events", help="list blocking and throttling events",
        description="List blocking and throttling events (start with bounds, end or ongoing, confidence).",
    )
    parser.add_argument("--since", metavar="T", help="events still active at or after T (RFC 3339 or a date)")
    parser.add_argument("--target", metavar="NAME", help="only this target")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.add_argument("--store", metavar="PATH", help="SQLite store (default: settings.store)")
    parser.add_argument("--targets", metavar="FILE", help="targets file whose settings name the store")
    parser.add_argument("--detect", action="store_true", help="re-detect events from the stored verdicts first")
    parser.set_defaults(func=_run)


def _open_store(args: argparse.Namespace) -> Any:
    """The store, imported lazily (tests replace this function with a fake)."""
    from probe.storage.store import Store

    path = args.store
    if path is None:
        from probe.commands._home import load_config

        path = load_config(args.targets).settings.store
    # Listing never creates a store; re-detecting writes the events it finds.
    return Store(str(Path(path).expanduser()), readonly=not args.detect)


def _run(args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = parse_time(args.since)
        except ValueError:
            print(f"probe events: --since {args.since!r} is not a date or an RFC 3339 time", file=sys.stderr)
            return 2
    store = _open_store(args)
    try:
        if args.detect:
            from probe.analysis.events import detect_all

            store.save_events(detect_all(store.query(record_type="verdict")))
        found: list[Event] = store.events(since=since, target=args.target)
    finally:
        store.close()
    if args.json:
        print(json.dumps([event_json(e) for e in found], ensure_ascii=False, indent=1))
    else:
        _print_table(found)
    return 0


def _t(value: float | None) -> str | None:
    return None if value is None else format_time(value)


def event_json(event: Event) -> dict[str, Any]:
    """An event as JSON: the dataclass's fields, times as RFC 3339 UTC strings."""
    return {
        "id": event.id, "probe_id": event.probe_id, "target": event.target, "service": event.service,
        "check": event.check, "type": event.type,
        "start_time": _t(event.start_time), "start_low": _t(event.start_low), "start_high": _t(event.start_high),
        "end_time": _t(event.end_time), "end_low": _t(event.end_low), "end_high": _t(event.end_high),
        "ongoing": event.ongoing, "confidence": event.confidence, "evidence": list(event.evidence),
    }


def _short(value: float) -> str:
    return format_time(value)[:19] + "Z"


def _print_table(found: list[Event]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Events ({len(found)})")
    for column in ("target", "service", "type", "start (bounds)", "end (bounds)", "confidence", "evidence"):
        table.add_column(column, overflow="fold")
    for e in found:
        start = f"{_short(e.start_time)}\n[dim]{_short(e.start_low)} .. {_short(e.start_high)}[/]"
        if e.end_time is None or e.end_low is None or e.end_high is None:
            end = "[bold red]ongoing[/]"
        else:
            end = f"{_short(e.end_time)}\n[dim]{_short(e.end_low)} .. {_short(e.end_high)}[/]"
        table.add_row(e.target, e.service, e.type, start, end, f"{e.confidence:.2f}", str(len(e.evidence)))
    Console(width=160).print(table)
