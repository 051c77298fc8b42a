"""``probe export``: the store's records (or events) as a dataset for researchers.

Formats and columns are described in :mod:`probe.storage.export` and docs/records.md.
Bad arguments (an unknown format, an unparsable or empty time range, an
unwritable ``--out``) exit 2 before anything is written; a failed export leaves
no file behind (it is written under a temporary name, renamed when complete). A
damaged store exits 2 and names the problem: a corrupt file exports nothing; records
whose envelope is missing are left out, the rest is exported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from probe.commands.show import add_store_arguments, report_damage, store_failed, store_path
from probe.storage.store import StoreError

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "export",
        help="export records or events as JSONL, CSV or Parquet",
        description="Export stored measurements (or, with --events, blocking events) for "
        "analysis, one OONI measurement per target run. JSONL holds the measurements as OONI writes "
        "them (OONI's oonidata reads it); Parquet (a directory partitioned by date, date=YYYY-MM-DD/) "
        "and CSV have one row per measurement: typed columns, the OONI templates and our lists as "
        "JSON. The probe's own IP address is never exported.",
    )
    parser.add_argument("--format", metavar="FMT",
                        help="jsonl, csv or parquet (default: from the --out suffix)")
    parser.add_argument("--out", metavar="PATH", required=True,
                        help="output file (jsonl, csv) or new directory (parquet)")
    parser.add_argument("--since", metavar="T",
                        help="from T, inclusive (2026-04-16, RFC 3339, or 30m/24h/7d ago)")
    parser.add_argument("--until", metavar="T", help="up to T, exclusive (same forms)")
    parser.add_argument("--target", metavar="NAME", help="only this target")
    parser.add_argument("--service", metavar="NAME", help="only this service")
    parser.add_argument("--workers", metavar="N", type=int, default=1,
                        help="processes converting records to measurements, for large exports "
                        "on a machine with idle CPUs (each adds its own memory; default 1)")
    parser.add_argument("--events", action="store_true",
                        help="export events (blocking episodes) instead of measurements")
    add_store_arguments(parser)
    parser.set_defaults(func=_run)


def _format(args: argparse.Namespace) -> str:
    from probe.storage.export import FORMATS, ExportError

    if args.format:
        fmt = str(args.format).lower()
        if fmt not in FORMATS:
            raise ExportError(f"--format {args.format!r}: unknown format "
                              f"(one of: {', '.join(FORMATS)})")
        return fmt
    guessed = _SUFFIXES.get(Path(args.out).suffix.lower())
    if guessed is None:
        raise ExportError(f"--out {args.out}: cannot tell the format from the name; "
                          "give --format jsonl, csv or parquet")
    return guessed


def _run(args: argparse.Namespace) -> int:
    from probe.storage.export import ExportError, check_range, export, parse_when
    from probe.storage.store import Store

    try:
        fmt = _format(args)
        since = parse_when(args.since, flag="--since") if args.since else None
        until = parse_when(args.until, flag="--until") if args.until else None
        check_range(since, until)
    except ExportError as exc:
        print(f"probe export: {exc}", file=sys.stderr)
        return 2
    path = store_path(args)
    try:
        with Store(path, readonly=True) as store:
            summary = export(store, fmt, args.out, since=since, until=until, target=args.target,
                             service=args.service, events=args.events,
                             workers=max(1, args.workers))
            damage = store.damage()
    except ExportError as exc:
        print(f"probe export: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        return store_failed(exc)
    what = "events" if args.events else "measurements"
    print(f"probe export: {summary.rows} {what} to {summary.path} ({summary.format}, "
          f"{summary.files} file(s), {summary.seconds:.1f} s)", file=sys.stderr)
    return report_damage(damage)
