"""``python -m probe.diagnostics KIND --address A [--port P] [--sni S] ...``: one diagnostic, JSON out.

For the lab and for researchers: prints the check record (test_keys hold the details).
Option keys are those of ``Target.options`` (``--opt diag_max_ttl=8``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

from probe.core.records import ProbeMeta, check_record
from probe.diagnostics import KINDS, OptionError, Options
from probe.diagnostics.capability import raw_unavailable
from probe.diagnostics.dispatch import run_sync, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probe.diagnostics", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--sni", help="the target name (SNI, Host, DNS name)")
    parser.add_argument("--control-sni", default="example.org")
    parser.add_argument("--resolver", action="append", default=[], help="a UDP resolver address (repeatable)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=YAML", help="a diag_* option")
    args = parser.parse_args(argv)
    options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.opt)}
    start = time.time()
    from probe.core.failures import PERMISSION_DENIED, UNKNOWN_PREFIX

    try:
        opts = Options.parse(options)
    except OptionError as exc:
        results = skipped([args.kind], args.sni or args.address, f"bad options: {exc}", UNKNOWN_PREFIX, start)
    else:
        reason = raw_unavailable()
        if reason is not None:
            results = skipped([args.kind], args.sni or args.address, reason, PERMISSION_DENIED, start, args.address,
                              args.port)
        else:
            results = [run_sync(args.kind, target=args.sni or args.address, address=args.address, port=args.port,
                                sni=args.sni, control_sni=args.control_sni, resolvers=args.resolver, opts=opts,
                                start=start)]
    meta = ProbeMeta(probe_id="diagnostics-cli")
    for r in results:
        json.dump(check_record(r, meta, "diagnostics", "diagnostics"), sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
