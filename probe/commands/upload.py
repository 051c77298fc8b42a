"""``probe upload``: send pending measurements to the enrolled collector once, then exit.

By default the measurements come from the local store, behind its upload cursor
(:mod:`probe.fleet.queue`, the same queue the daemon uploads from); with ``--from`` from a
JSON-lines file of OONI measurements, with what was acknowledged kept beside it
(``FILE.uploaded``). Exit 0 when everything pending
was acknowledged, 1 when some is still pending (and why, in plain words), 3 when refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from probe.commands.show import add_store_arguments, store_path


def register(sub: Any) -> None:
    parser = sub.add_parser("upload", help="upload pending measurements to the collector once",
                            description=__doc__)
    parser.add_argument("--from", dest="source", type=Path, metavar="FILE",
                        help="JSON lines of measurements to upload (default: the local store)")
    parser.add_argument("--config", type=Path, metavar="PATH", help="enrolment file (default: probe enrol's)")
    parser.add_argument("--proxy", metavar="URL", help="override the enrolment's proxy")
    parser.add_argument("--cacert", metavar="PEM", help="trust this CA for the collector's TLS certificate")
    parser.add_argument("--batch", type=int, default=500, help="measurements per batch (default 500)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="per request, connecting included (default 30)")
    parser.add_argument("--deadline", type=float, default=600.0, metavar="S",
                        help="stop retrying after this many seconds (default 600)")
    add_store_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.fleet.enrol import EnrolError, config_path, load, tls_verify
    from probe.fleet.upload import JsonlSource, Policy, Uploader, UploadRefused

    try:
        enrolment = load(args.config or config_path())
    except EnrolError as exc:
        print(f"probe upload: {exc}", file=sys.stderr)
        return 2
    policy = Policy(batch_size=args.batch, deadline_s=args.deadline, timeout_s=args.timeout)
    if args.source is None:
        return _from_store(args, enrolment, policy)
    source = JsonlSource(args.source)

    async def go() -> int:
        async with Uploader(enrolment.urls, enrolment.credential, proxy=args.proxy or enrolment.proxy,
                            verify=tls_verify(args.cacert), policy=policy) as up:
            try:
                report = await up.run(source)
            except UploadRefused as exc:
                print(f"probe upload: the collector refuses this probe: {exc}", file=sys.stderr)
                return 3
        print(f"sent {report.sent} (new {report.accepted}, already there {report.duplicates}), "
              f"rejected {report.rejected}")
        if not report.complete:
            print(f"probe upload: not finished; last error: {report.last_error}", file=sys.stderr)
            return 1
        return 0
    return asyncio.run(go())


def _from_store(args: argparse.Namespace, enrolment: Any, policy: Any) -> int:
    from probe.fleet.enrol import tls_verify
    from probe.fleet.queue import upload_round
    from probe.storage.store import StoreError

    try:
        done = upload_round(store_path(args), enrolment, policy, proxy=args.proxy, verify=tls_verify(args.cacert))
    except StoreError as exc:
        print(f"probe upload: {exc}", file=sys.stderr)
        return 2
    report = done.report
    print(f"sent {report.sent} (new {report.accepted}, already there {report.duplicates}), "
          f"rejected {report.rejected}; pending {done.pending}")
    if done.refused:
        print(f"probe upload: {done.status.words()} [{report.last_error}]", file=sys.stderr)
        return 3
    if not report.complete:
        print(f"probe upload: not finished: {done.status.words()} [{report.last_error}]", file=sys.stderr)
        return 1
    return 0
