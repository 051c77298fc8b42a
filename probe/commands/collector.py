"""``probe collector``: run the fleet's collector and look after its central store.

- ``serve``: the HTTP API (see :mod:`probe.fleet.collector`), TLS optional;
- ``migrate``: apply the schema migrations and create the partitions ahead;
- ``token create|list|revoke``: enrolment tokens (a token is printed once, only its hash kept);
- ``prune``: retention, by dropping whole day partitions;
- ``export``: measurements as JSONL or Parquet, streamed;
- ``events``: the fleet events the collectors found (per service and ASN or country).

``--db`` defaults to ``$PROBE_COLLECTOR_DB`` so that the password stays out of ``ps``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="DSN", default=os.environ.get("PROBE_COLLECTOR_DB"),
                        help="PostgreSQL connection string, e.g. postgresql://collector@localhost/probe "
                             "(default: $PROBE_COLLECTOR_DB)")


def register(sub: Any) -> None:
    parser = sub.add_parser("collector", help="run the fleet's collector and manage its central store",
                            description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="serve the collector's HTTP API")
    _db_argument(serve)
    serve.add_argument("--listen", default="127.0.0.1:8470", metavar="HOST:PORT",
                       help="address to listen on (default 127.0.0.1:8470; behind a reverse proxy keep it local)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    serve.add_argument("--max-body", type=int, default=8 << 20, metavar="BYTES", help="compressed request limit")
    serve.add_argument("--max-age-days", type=int, default=30,
                       help="refuse measurements older than this (default 30)")
    serve.add_argument("--rate", type=float, default=5.0, help="batches per second per probe (default 5)")
    serve.add_argument("--burst", type=float, default=20.0, help="rate limiter burst (default 20)")
    serve.add_argument("--retry-after", type=int, default=5, metavar="S",
                       help="Retry-After on 503 when the database is down (default 5)")
    serve.add_argument("--pool", type=int, default=8, help="database connections per process (default 8)")
    serve.add_argument("--helper-concurrency", type=int, default=16, metavar="N",
                       help="test-helper requests at once under /helper/ (default 16; 0 turns the helper off)")
    serve.add_argument("--events-every", type=float, default=60.0, metavar="S",
                       help="run the fleet events job every S seconds (one collector at a time; 0: off; default 60)")
    serve.set_defaults(func=_serve)

    migrate = verbs.add_parser("migrate", help="apply schema migrations; create partitions ahead")
    _db_argument(migrate)
    migrate.add_argument("--ahead-days", type=int, default=2, help="partitions created ahead (default 2)")
    migrate.set_defaults(func=_migrate)

    token = verbs.add_parser("token", help="enrolment tokens")
    tverbs = token.add_subparsers(dest="token_verb", metavar="ACTION", required=True)
    create = tverbs.add_parser("create", help="create a token (printed once)")
    _db_argument(create)
    create.add_argument("--label", required=True, help="who or what the token is for")
    create.set_defaults(func=_token_create)
    listing = tverbs.add_parser("list", help="list tokens (never the secrets)")
    _db_argument(listing)
    listing.set_defaults(func=_token_list)
    revoke = tverbs.add_parser("revoke", help="revoke a token and the credentials of its probes")
    _db_argument(revoke)
    revoke.add_argument("ref", metavar="ID|LABEL")
    revoke.set_defaults(func=_token_revoke)

    prune = verbs.add_parser("prune", help="retention: drop day partitions older than --keep-days")
    _db_argument(prune)
    prune.add_argument("--keep-days", type=int, required=True)
    prune.set_defaults(func=_prune)

    export = verbs.add_parser("export", help="export measurements (JSONL or Parquet), streamed")
    _db_argument(export)
    export.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    export.add_argument("--out", metavar="PATH", help="output file (default: stdout, jsonl only)")
    export.add_argument("--since", required=True, metavar="T", help="2026-04-16, RFC 3339, or 30m/24h/7d ago")
    export.add_argument("--until", metavar="T")
    export.add_argument("--cc", help="only this probe_cc")
    export.add_argument("--asn", help="only this probe_asn (AS1234)")
    export.add_argument("--service", help="only this service")
    export.set_defaults(func=_export)

    events = verbs.add_parser("events", help="list fleet events (blocking per service and ASN or country)")
    _db_argument(events)
    events.add_argument("--cc", help="only this country (probe_cc)")
    events.add_argument("--asn", help="only this ASN (AS1234); country-wide events have none")
    events.add_argument("--service", help="only this service")
    events.add_argument("--ongoing", action="store_true", help="only events that have not ended")
    events.add_argument("--limit", type=int, default=1000, help="at most this many, newest first (default 1000)")
    events.add_argument("--json", action="store_true", help="one JSON array")
    events.set_defaults(func=_events)


def _dsn(args: argparse.Namespace) -> str:
    if not args.db:
        raise SystemExit("probe collector: give --db postgresql://... (or set PROBE_COLLECTOR_DB)")
    return str(args.db)


def _serve(args: argparse.Namespace) -> int:
    from probe.fleet.collector import Settings, serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"probe collector: --listen {args.listen!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("probe collector: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    settings = Settings(dsn=_dsn(args), max_body_bytes=args.max_body, max_age_days=args.max_age_days,
                        rate_per_s=args.rate, rate_burst=args.burst, retry_after_s=args.retry_after,
                        pool_max=args.pool, helper_concurrency=max(0, args.helper_concurrency),
                        events_every_s=args.events_every)
    serve(settings, host.strip("[]"), int(port), tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0


def _with_db(args: argparse.Namespace, work: Any) -> int:
    from probe.fleet import central

    try:
        with central.connect(_dsn(args), autocommit=True) as conn:
            result: int = work(conn)
            return result
    except central.CentralError as exc:
        print(f"probe collector: {exc}", file=sys.stderr)
        return 1


def _migrate(args: argparse.Namespace) -> int:
    from probe.fleet import central

    def work(conn: Any) -> int:
        applied = central.migrate(conn, ahead_days=args.ahead_days)
        print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
        return 0
    return _with_db(args, work)


def _token_create(args: argparse.Namespace) -> int:
    from probe.fleet import central

    def work(conn: Any) -> int:
        print(central.create_token(conn, args.label))
        print(f"token for {args.label!r} created; it is shown only now", file=sys.stderr)
        return 0
    return _with_db(args, work)


def _token_list(args: argparse.Namespace) -> int:
    from probe.fleet import central

    def work(conn: Any) -> int:
        print(f"{'id':>4}  {'label':<24} {'created':<20} {'revoked':<20} probes")
        for t in central.list_tokens(conn):
            revoked = f"{t.revoked_at:%Y-%m-%d %H:%M:%S}" if t.revoked_at else "-"
            print(f"{t.id:>4}  {t.label:<24} {t.created_at:%Y-%m-%d %H:%M:%S}  {revoked:<20} {t.probes}")
        return 0
    return _with_db(args, work)


def _token_revoke(args: argparse.Namespace) -> int:
    from probe.fleet import central

    def work(conn: Any) -> int:
        central.revoke_token(conn, args.ref)
        print(f"revoked {args.ref!r}: its probes can no longer upload", file=sys.stderr)
        return 0
    return _with_db(args, work)


def _prune(args: argparse.Namespace) -> int:
    from probe.fleet import central

    def work(conn: Any) -> int:
        dropped = central.drop_older(conn, args.keep_days)
        print(f"dropped {len(dropped)} day partition(s)" + (f": {dropped[0]} .. {dropped[-1]}" if dropped else ""))
        return 0
    return _with_db(args, work)


def _export(args: argparse.Namespace) -> int:
    from probe.fleet import central, export
    from probe.storage.export import ExportError, check_range, parse_when

    try:
        since = parse_when(args.since, flag="--since")
        until = parse_when(args.until, flag="--until") if args.until else None
        check_range(since, until)
    except ExportError as exc:
        print(f"probe collector export: {exc}", file=sys.stderr)
        return 2
    if args.format == "parquet" and not args.out:
        print("probe collector export: --format parquet needs --out", file=sys.stderr)
        return 2

    def stamp(t: float | None) -> dt.datetime | None:
        return None if t is None else dt.datetime.fromtimestamp(t, tz=dt.UTC)

    def work(conn: Any) -> int:
        rows = central.export_rows(conn, since=stamp(since) or dt.datetime.now(dt.UTC), until=stamp(until),
                                   cc=args.cc, asn=args.asn, service=args.service)
        if args.format == "parquet":
            count = export.write_parquet(rows, args.out)
        elif args.out:
            with open(args.out, "w") as out:
                count = export.write_jsonl(rows, out)
        else:
            count = export.write_jsonl(rows, sys.stdout)
        print(f"probe collector export: {count} measurements", file=sys.stderr)
        return 0
    return _with_db(args, work)


def _events(args: argparse.Namespace) -> int:
    import json

    from probe.fleet import events

    def work(conn: Any) -> int:
        found = events.list_events(conn, cc=args.cc, asn=args.asn, service=args.service, ongoing=args.ongoing,
                                   limit=args.limit)
        if args.json:
            print(json.dumps(found, indent=1))
            return 0
        print(f"{'service':<16} {'cc':<3} {'asn':<10} {'type':<14} {'start (bounds)':<44} {'end':<20} share")
        for e in found:
            bounds = f"{e['start_time'][:19]} ({e['start_low'][11:19]}-{e['start_high'][11:19]})"
            end = "ongoing" if e["ongoing"] else e["end_time"][:19]
            print(f"{e['service']:<16} {e['cc']:<3} {e['asn'] or '(all)':<10} {e['type']:<14} {bounds:<44} "
                  f"{end:<20} {e['share']:.2f} ({e['probes']}/{e['reporting']})")
        return 0
    return _with_db(args, work)
