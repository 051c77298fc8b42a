"""``probe init``: consent, then the volunteer's own configuration in the XDG config directory.

Asks (or takes ``--country``, ``--asn``, ``--upload/--no-upload``) and writes
``$XDG_CONFIG_HOME/probe/targets.yaml``: the bundled targets with the country and network filled
in and the store under ``$XDG_DATA_HOME/probe/``. Every command then finds it without
``--targets`` (``probe targets list`` says which file is in use). Exit codes: 0 written, 1 the
file exists (``--force`` replaces it), 2 no consent or a bad value.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from probe.commands import _consent as consent
from probe.commands._home import data_dir, user_targets
from probe.core import config as config_mod

_CC = re.compile(r"^[A-Z]{2}$")
_ASN = re.compile(r"^(?:AS)?([0-9]{1,10})$")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "init", help="consent, and write your own configuration (asks, or takes flags)",
        description="Show the risk notice and ask for consent, then write your configuration: the "
        "default targets, your country and network, in ~/.config/probe/targets.yaml.",
    )
    parser.add_argument("--country", metavar="CC", help="two-letter country code (ISO 3166), e.g. RU")
    parser.add_argument("--asn", metavar="ASN", help="your network's number, e.g. AS12389 (your provider's)")
    parser.add_argument("--upload", action=argparse.BooleanOptionalAction, default=None,
                        help="upload measurements to a collector (then join one: probe enrol URL TOKEN)")
    parser.add_argument("--force", action="store_true", help="replace an existing configuration")
    consent.add_argument(parser)
    parser.set_defaults(func=_run)


def _ask(question: str, default: str) -> str:
    answer = input(f"{question} [{default}]: ").strip()
    return answer or default


def normalise(country: str, asn: str) -> tuple[str, str]:
    """``("ru", "12389")`` -> ``("RU", "AS12389")``; ValueError names the bad value."""
    cc = country.strip().upper()
    if not _CC.match(cc):
        raise ValueError(f"country {country!r}: two letters, e.g. RU (ZZ: unknown)")
    match = _ASN.match(asn.strip().upper())
    if match is None:
        raise ValueError(f"ASN {asn!r}: AS and digits, e.g. AS12389 (AS0: unknown)")
    return cc, f"AS{match.group(1)}"


def configuration(template: str, cc: str, asn: str, upload: bool, store: str) -> str:
    """The bundled targets file with this volunteer's settings (comments kept)."""
    lines = template.splitlines(keepends=True)
    out: list[str] = []
    for line in lines:
        if line.startswith("  store:"):
            line = f"  store: {store}\n"
        out.append(line)
        if line.rstrip() == "settings:":
            out.append("  # Written by `probe init`; edit freely; check it with `probe targets validate FILE`\n")
            out.append(f"  probe_cc: {cc}\n  probe_asn: {asn}\n")
            out.append("  # Upload to a collector (docs/fleet.md): join one with `probe enrol URL TOKEN`,\n"
                       "  # which keeps the credential in ~/.config/probe/fleet.json (mode 0600)\n"
                       f"  upload: {{enabled: {'true' if upload else 'false'}}}\n")
    return "".join(out)


def _run(args: argparse.Namespace) -> int:
    path = user_targets()
    if path.exists() and not args.force:
        print(f"probe init: {path} exists; edit it, or pass --force to write it again", file=sys.stderr)
        return 1
    if not consent.require(args.i_consent, None):
        return 2
    if args.i_consent and not consent.recorded():
        consent.record()
    interactive = sys.stdin.isatty()
    try:
        country = args.country or (_ask("Your country (two letters, ZZ if you prefer not to say)", "ZZ")
                                   if interactive else "ZZ")
        asn = args.asn or (_ask("Your network's ASN (e.g. AS12389; AS0 if you prefer not to say)", "AS0")
                           if interactive else "AS0")
        upload = args.upload if args.upload is not None else (
            interactive and _ask("Upload measurements to a collector? (yes/no)", "no").lower().startswith("y"))
        cc, asn = normalise(country, asn)
    except ValueError as exc:
        print(f"probe init: {exc}", file=sys.stderr)
        return 2
    store = data_dir() / "probe.sqlite"
    text = configuration(config_mod.DEFAULT_TARGETS.read_text(encoding="utf-8"), cc, asn, upload, str(store))
    config_mod.load_text(text, str(path))  # what we write must load
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"Wrote {path} (country {cc}, network {asn}; store {store}).")
    if upload:
        print("Upload is on: join a collector with `probe enrol URL TOKEN` (the token comes from its operator); "
              "until then measurements wait in the store. `probe status` says how uploads go.")
    print("Next: `probe daemon`, then open http://127.0.0.1:9810/ to see what the probe sees.")
    return 0
