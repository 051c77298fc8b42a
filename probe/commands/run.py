"""``probe run --once``: measure every target once, store the records, print the verdicts.

Exit codes: 0 when the run completed (blocked targets are results, not errors),
2 on a configuration error (the message names file, line, key and value), 1 when
the store or the output file cannot be written. Records already measured are
written to ``--out`` (one OONI measurement per target, docs/records.md) and the store as
each target finishes, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from probe.analysis.ooni import measurement
from probe.commands import _consent as consent
from probe.commands._cells import accessible_cell, blocking_cell
from probe.commands._home import load_config
from probe.core import ooni
from probe.core.context import Context
from probe.core.records import ProbeMeta
from probe.pipeline import TargetOutcome
from probe.service.addresses import address_book, scrub_logs
from probe.service.runner import run_loop, run_once


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "run", help="measure the targets", description="Measure every target once and print explained verdicts."
    )
    parser.add_argument("--once", action="store_true", required=True,
                        help="run every target once and exit (the daemon runs continuously)")
    parser.add_argument("--targets", metavar="FILE", 
                        help="targets file (default: the one `probe init` wrote, else the bundled targets.yaml)")
    parser.add_argument("--only", metavar="NAME", nargs="+", help="only these targets (controls always run)")
    parser.add_argument("--out", metavar="FILE.jsonl",
                        help="also write one OONI measurement per target to this JSON Lines file")
    parser.add_argument("--records", metavar="FILE.jsonl",
                        help="also write every check and verdict record, in the store's own form, to this file")
    parser.add_argument("--store", metavar="PATH", help="SQLite store (default: settings.store)")
    parser.add_argument("--no-store", action="store_true", help="do not write the local store")
    parser.add_argument("--json", action="store_true", help="print verdict records as JSON instead of a table")
    consent.add_argument(parser)
    parser.set_defaults(func=_run)


def open_store(path: str, retention_days: int, upload_bound_days: float | None = None) -> Any:
    """The local store (imported here so that ``--no-store`` runs need no SQLite file); with
    upload on, retention keeps what is not uploaded (up to ``upload_bound_days``)."""
    from probe.storage.store import Store

    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return Store(str(Path(path).expanduser()), retention_days=retention_days, upload_bound_days=upload_bound_days)


def upload_bound(settings: Any) -> float | None:
    """The upload queue's bound in days when upload is on, else None (retention as usual)."""
    return float(settings.upload.max_pending_days) if settings.upload.enabled else None


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.targets).select(args.only)
    settings = cfg.settings
    if not consent.require(args.i_consent, settings):
        return 2
    store = None if args.no_store else open_store(args.store or settings.store, settings.retention_days,
                                                      upload_bound(settings))
    probe_id = store.probe_id(settings.probe_id) if store is not None else (settings.probe_id or "probe-ephemeral")
    meta = ProbeMeta(probe_id=probe_id, probe_cc=settings.probe_cc, probe_asn=settings.probe_asn)
    ctx = Context(settings=settings, meta=meta, own=address_book())
    scrub_logs(ctx.own)
    out: IO[str] | None = None
    raw: IO[str] | None = None
    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else None  # noqa: SIM115 - closed below
        raw = open(args.records, "w", encoding="utf-8") if args.records else None  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"probe: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        if out is not None:
            out.close()
        return 1
    err = Console(stderr=True)
    try:
        with Progress(
            TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=err, transient=True, disable=not err.is_terminal,
        ) as progress:
            task = progress.add_task("", total=len(cfg.targets))

            def on_outcome(outcome: TargetOutcome) -> None:
                records = outcome.records(meta)
                if out is not None:
                    out.write(ooni.encode(measurement(records)).decode("utf-8") + "\n")
                    out.flush()
                if raw is not None:
                    raw.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
                    raw.flush()
                if store is not None:
                    store.append(records)
                progress.update(task, advance=1, description=outcome.target.name)

            outcomes = run_loop(run_once(cfg, ctx, on_outcome))
    finally:
        for sink in (out, raw):
            if sink is not None:
                sink.close()
        if store is not None:
            store.close()
    if args.json:
        for o in outcomes:
            print(json.dumps(o.records(meta)[-1], ensure_ascii=False))
    else:
        Console().print(verdict_table(outcomes))
    return 0


def verdict_table(outcomes: list[TargetOutcome]) -> Table:
    table = Table(title="Verdicts", show_lines=False)
    for column in ("target", "service", "accessible", "blocking", "failure", "why"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        v = o.verdict
        name = f"{v.target} (control)" if o.target.control else v.target
        table.add_row(name, v.service, accessible_cell(v.accessible), blocking_cell(v.blocking), v.failure or "",
                      o.scrub(v.reason))
    return table
