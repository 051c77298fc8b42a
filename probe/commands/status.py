"""``probe status``: this probe's upload to the collector, in plain words.

Enrolled or not, measurements waiting (target runs behind the upload cursor), the last
successful upload, and the last error as a sentence that says what to do (the daemon and
``probe upload`` keep it in the store, :mod:`probe.fleet.queue`). Exit 0; 1 when the last
upload round failed; 2 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from probe.commands.show import add_store_arguments, store_path


def register(sub: Any) -> None:
    parser = sub.add_parser("status", help="upload state: pending, last success, last error",
                            description=__doc__)
    parser.add_argument("--config", type=Path, metavar="PATH", help="enrolment file (default: probe enrol's)")
    add_store_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.core.records import format_time
    from probe.fleet.enrol import EnrolError, config_path, load
    from probe.fleet.queue import Status
    from probe.storage.store import Store, StoreError

    try:
        enrolment = load(args.config or config_path())
        print(f"enrolled: as {enrolment.probe_id} with {', '.join(enrolment.urls)}")
    except EnrolError as exc:
        print(f"enrolled: no ({exc})")
    try:
        with Store(store_path(args), readonly=True) as store:
            pending, status = store.pending_runs(), Status.load(store)
            expired = int(store.meta("upload_expired") or 0)
    except StoreError as exc:
        print(f"probe status: {exc}", file=sys.stderr)
        return 2
    print(f"pending: {pending} measurement(s) not uploaded yet")
    if expired:
        print(f"expired: {expired} measurement(s) deleted before they could be uploaded (queue bound)")
    print(f"uploaded: {status.uploaded} measurement(s)")
    print("last success: " + (format_time(status.last_success) if status.last_success else "never"))
    words = status.words()
    if words is None:
        print("last error: none")
        return 0
    when = format_time(status.last_attempt) if status.last_attempt else "?"
    print(f"last error: {words} ({when}: {status.last_error})")
    return 1
