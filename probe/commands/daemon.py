"""``probe daemon``: measure continuously, store every result, serve ``/metrics`` and ``/probe``.

Exit codes: 0 after SIGTERM/SIGINT (in-flight runs finished or cancelled, store
flushed), 2 on a configuration error at start, 1 when the store cannot be opened
or the listen address cannot be bound. SIGHUP reloads the targets file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from probe.core import config as config_mod
from probe.core.context import Context
from probe.core.records import ProbeMeta


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "daemon", help="measure continuously and serve Prometheus metrics",
        description="Measure every target on its interval, store each result, and serve /metrics "
        "and /probe?target=NAME (blackbox_exporter style). SIGHUP reloads the targets; SIGTERM stops.",
    )
    parser.add_argument("--targets", metavar="FILE", help="targets file (default: the bundled targets.yaml)")
    parser.add_argument("--store", metavar="PATH", help="SQLite store (default: settings.store)")
    parser.add_argument("--no-store", action="store_true", help="do not write the local store")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="where to serve /metrics (default: settings.listen, 127.0.0.1:9810); "
                        "binding a non-loopback address must be asked for explicitly here or in settings")
    parser.add_argument("--grace", metavar="SECONDS", type=float, default=10.0,
                        help="on SIGTERM, how long in-flight runs may finish before they are cancelled")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--measure", metavar="MODULE:FUNCTION",
                        help="measure function to use instead of probe.pipeline.measure_target "
                        "(for tests and benchmarks)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.commands.run import open_store
    from probe.service import daemon as daemon_mod
    from probe.service.endpoints import Endpoints
    from probe.service.runner import run_loop

    daemon_mod.setup_logging(getattr(logging, args.log_level.upper()))
    cfg = config_mod.load(args.targets)
    settings = cfg.settings
    measure = daemon_mod.load_measure(args.measure)
    store = None if args.no_store else open_store(args.store or settings.store, settings.retention_days)
    probe_id = store.probe_id(settings.probe_id) if store is not None else (settings.probe_id or "probe-ephemeral")
    meta = ProbeMeta(probe_id=probe_id, probe_cc=settings.probe_cc, probe_asn=settings.probe_asn)
    daemon = daemon_mod.Daemon(cfg, Context(settings=settings, meta=meta), measure, store=store,
                               grace=args.grace, detect=daemon_mod.default_detector())
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


def _loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost")
