"""``probe daemon``: measure continuously, store every result, serve ``/metrics`` and ``/probe``.

Exit codes: 0 after SIGTERM/SIGINT (in-flight runs finished or cancelled, store
flushed), 2 on a configuration error at start, 1 when the store is not a usable probe
store (corrupt, newer schema) or the listen address cannot be bound. A store that cannot
be written yet (full or read-only disk) does not stop the daemon: it logs the error,
measures on, keeps the records in memory (``settings.store_buffer_mb``) and writes them
when it can (see :mod:`probe.service.writer`). SIGHUP reloads the targets file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from probe.commands import _consent as consent
from probe.commands._home import load_config
from probe.commands.run import upload_bound
from probe.core.config import Settings
from probe.core.context import Context
from probe.core.records import ProbeMeta, default_probe_id
from probe.storage.store import Store, StoreError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "daemon", help="measure continuously and serve Prometheus metrics",
        description="Measure every target on its interval, store each result, and serve /metrics "
        "and /probe?target=NAME (blackbox_exporter style). SIGHUP reloads the targets; SIGTERM stops.",
    )
    parser.add_argument("--targets", metavar="FILE", 
                        help="targets file (default: the one `probe init` wrote, else the bundled targets.yaml)")
    parser.add_argument("--store", metavar="PATH", help="SQLite store (default: settings.store)")
    parser.add_argument("--no-store", action="store_true", help="do not write the local store")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="where to serve /metrics (default: settings.listen, 127.0.0.1:9810); "
                        "binding a non-loopback address must be asked for explicitly here or in settings")
    parser.add_argument("--grace", metavar="SECONDS", type=float, default=10.0,
                        help="on SIGTERM, how long in-flight runs may finish before they are cancelled")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="auto", choices=("auto", "json", "text"),
                        help="auto (default): readable lines on a terminal, JSON lines otherwise")
    parser.add_argument("--measure", metavar="MODULE:FUNCTION",
                        help="measure function to use instead of probe.pipeline.measure_target "
                        "(for tests and benchmarks)")
    consent.add_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.service import daemon as daemon_mod
    from probe.service.addresses import address_book, scrub_logs
    from probe.service.endpoints import Endpoints
    from probe.service.runner import run_loop

    daemon_mod.setup_logging(getattr(logging, args.log_level.upper()), fmt=args.log_format)
    cfg = load_config(args.targets)
    if cfg.settings.upload.enabled:
        from probe.fleet.vantage import amend

        cfg = amend(cfg)
    settings = cfg.settings
    if not consent.require(args.i_consent, settings):
        return 2
    measure = daemon_mod.load_measure(args.measure)
    try:
        store = None if args.no_store else _open_store(args.store or settings.store, settings)
    except StoreError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    probe_id = _probe_id(store, settings.probe_id)
    meta = ProbeMeta(probe_id=probe_id, probe_cc=settings.probe_cc, probe_asn=settings.probe_asn)
    ctx = Context(settings=settings, meta=meta, own=address_book())
    scrub_logs(ctx.own)
    daemon = daemon_mod.Daemon(cfg, ctx, measure, store=store, grace=args.grace,
                               detect=daemon_mod.default_detector())
    if settings.upload.enabled:
        from probe.fleet.vantage import amend

        daemon.amend = amend  # on reloads too
    if store is not None and settings.upload.enabled:
        from probe.fleet.queue import upload_loop

        daemon.background = (lambda: upload_loop(store.path, settings.upload, daemon.state),)
    listen = args.listen or settings.listen
    try:
        endpoints = Endpoints(daemon, listen)
    except OSError as exc:
        print(f"probe: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        if store is not None:
            store.close()
        return 1
    logging.getLogger("probe.service.daemon").info(
        "serving metrics", extra={"fields": {"port": endpoints.port, "loopback": _loopback(listen)}})
    try:
        # the product's loop, as `probe run` uses: uvloop when installed
        return run_loop(endpoints.serve(daemon.run()))
    finally:
        endpoints.close()


def _open_store(path: str, settings: Settings) -> Store:
    """The store, usable even when it cannot be written yet (then the error is logged once here)."""
    store = Store(Path(path).expanduser(), retention_days=settings.retention_days, retry_open=True,
                  upload_bound_days=upload_bound(settings),
                  buffer_bytes=settings.store_buffer_mb * 1024 * 1024)
    if store.last_error is not None:
        logging.getLogger("probe.service.daemon").error(
            "store not writable; measuring goes on, records are kept in memory until it is", extra={"fields": {
                "reason": store.last_error.reason, "error": str(store.last_error),
                "buffer_mb": settings.store_buffer_mb}})
    return store


def _probe_id(store: Store | None, configured: str | None) -> str:
    """The configured id, else the store's; a store that cannot be read yet gets a fresh one (logged)."""
    if store is None:
        return configured or "probe-ephemeral"
    try:
        return store.probe_id(configured)
    except StoreError:
        pass
    with contextlib.suppress(StoreError), Store(store.path, readonly=True) as reader:
        return reader.probe_id(configured)
    value = default_probe_id()
    logging.getLogger("probe.service.daemon").warning(
        "cannot read the probe_id from the store; using a new one for this run", extra={"fields": {"probe_id": value}})
    return value


def _loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost")
