"""``probe lab up|down|status|matrix|run SCENARIO``: the censorship lab (root only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rich.console import Console


def register(sub: Any) -> None:
    parser = sub.add_parser("lab", help="the network-namespace censorship lab (root)",
                            description="Build a lab of network namespaces with a censor on the path, and "
                            "replay censorship techniques and incident scenarios against the probe.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, helptext in (("up", "build the lab and leave it running"), ("down", "remove everything of a lab"),
                           ("status", "namespaces and processes of a lab"),
                           ("matrix", "apply every technique in turn and print technique × verdict"),
                           ("run", "replay a seed scenario (seeds/*.yaml) and print expected vs observed")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("--prefix", default="plab", help="name prefix of the lab's namespaces (default plab)")
        if name in ("up", "matrix", "run"):
            action.add_argument("--hops", type=int, default=1, help="routers on the path (default 1)")
            action.add_argument("--censor-hop", type=int, default=1, help="which router censors (default 1)")
        if name == "run":
            action.add_argument("scenario", metavar="SCENARIO", help="a seeds/*.yaml file")
            action.add_argument("--speed", type=float, default=1.0, help="time compression factor")
        action.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.lab import Lab, LabError, down

    if os.geteuid() != 0:
        print("probe lab: needs root (network namespaces, iptables, tc)", file=sys.stderr)
        return 2
    console = Console()
    try:
        if args.action == "down":
            down(args.prefix)
            console.print(f"lab {args.prefix}: removed")
            return 0
        if args.action == "status":
            status = Lab(args.prefix).status()
            alive = [pid for pid, up in status["processes"] if up]
            print(json.dumps({"prefix": args.prefix, "namespaces": status["namespaces"],  # plain: for scripts
                              "processes": alive, "running": bool(status["namespaces"])}))
            return 0
        lab = Lab(args.prefix, hops=args.hops, censor_hop=args.censor_hop)
        if args.action == "up":
            try:
                lab.up()
            except BaseException:
                down(args.prefix)  # a half-built lab is worse than none
                raise
            console.print(f"lab {args.prefix} is up: client namespace {lab.ns_client}, censor {lab.ns_censor}, "
                          f"servers {lab.ns_srv}.\nTry: ip netns exec {lab.ns_client} probe run --once --targets "
                          f"{lab.state}/example.yaml\nRemove it with: probe lab down --prefix {args.prefix}")
            (lab.state / "example.yaml").write_text(lab.targets_yaml(["web.telegram.test", "shop.cloud.test"]))
            return 0
        if args.action == "run":
            try:  # written separately (seeds/ and the replay): say so plainly if it is not there
                from probe.lab.scenario import replay
            except ImportError as exc:
                print(f"probe lab run: scenario replay is not available ({exc})", file=sys.stderr)
                return 1
        with lab:
            if args.action == "matrix":
                from probe.lab.matrix import CASES, run_case, table

                observed = [run_case(lab, case) for case in CASES]
                console.print(table(observed))
                return 0 if all(not o.problems() for o in observed) else 1
            report = replay(args.scenario, lab, speed=args.speed)
            return 0 if report.passed else 1
    except LabError as exc:
        print(f"probe lab: {exc}", file=sys.stderr)
        return 1
