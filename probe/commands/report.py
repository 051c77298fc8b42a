"""``probe report --since T --out report.html``: one self-contained HTML file to share.

The same views and plots as the daemon's status page (probe.service.status), from the local store:
every service's last state in words, the events with start and end, throughput against the
control. Inline CSS and SVG, no script, a Content-Security-Policy meta tag; no address, and the
probe id only with ``--with-probe-id``. Exit codes: 0 written, 1 store or file error, 2 bad ``--since``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from probe.commands._home import load_config
from probe.commands.show import add_store_arguments, store_path
from probe.storage.store import StoreError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report", help="a self-contained HTML report to share (no address, no script)",
        description="Write one HTML file with each service's state, the events and the throughput plots "
        "since T, from the local store: for a journalist or an NGO.",
    )
    add_store_arguments(parser)
    parser.add_argument("--since", metavar="T", default="7d",
                        help="from T (2026-04-16, RFC 3339, or 30m/24h/7d ago; default 7d)")
    parser.add_argument("--out", metavar="FILE.html", required=True, help="where to write the report")
    parser.add_argument("--with-probe-id", action="store_true", help="name the probe id in the report")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.service.status import render_html, view_from_store
    from probe.storage.export import ExportError, parse_when

    try:
        since = parse_when(args.since)
    except ExportError as exc:
        print(f"probe report: {exc}", file=sys.stderr)
        return 2
    settings = load_config(args.targets).settings
    path = store_path(args)
    facts = [("country", settings.probe_cc), ("network", settings.probe_asn)]
    try:
        if args.with_probe_id:
            from probe.storage.store import Store

            with Store(path, readonly=True) as store:
                facts.append(("probe", store.probe_id(settings.probe_id)))
        view = view_from_store(path, since=since, now=time.time(), title="Censorship measurements: report",
                               probe=facts)
    except StoreError as exc:
        print(f"probe: store error: {exc}", file=sys.stderr)
        return 1
    try:
        Path(args.out).write_text(render_html(view, csp_meta=True), encoding="utf-8")
    except OSError as exc:
        print(f"probe report: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Wrote {args.out}: {len(view.rows)} targets, {len(view.events)} events.")
    return 0
