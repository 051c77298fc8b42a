"""Informed consent, asked once before the first measurement (as OONI Probe does).

Measuring censorship from your own connection can be risky where this probe is meant to run. The
notice says what is measured, stored and uploaded, what is never stored, and the risks; the answer
is recorded in ``$XDG_CONFIG_HOME/probe/consent``. Without a terminal nobody can answer, so an
unattended run must say it explicitly: ``--i-consent``, ``PROBE_INFORMED_CONSENT=1`` or
``settings.informed_consent: true``; otherwise it exits 2 at once, saying so (it never waits).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from probe.commands._home import config_dir
from probe.core.config import Settings

ENV = "PROBE_INFORMED_CONSENT"
NOTICE_VERSION = "1"
ANSWER = "I agree"

NOTICE = """\
Before you measure: please read.

What the probe does: from your connection, it connects to messaging apps, VPNs and cloud services
(Telegram, WhatsApp, Signal, ...) and to a few control sites, over DNS, TCP, TLS, HTTP and QUIC,
every few minutes, and decides whether each one is accessible, blocked or slowed down.

What it stores, on this computer: each measurement (what was tried, when, what answered, how
fast), your country and network number (ASN) as you configure them, and a random probe id.
What it uploads: nothing, unless you turn on upload to a collector (`probe init`); then the same
measurements, without your address.
What it never stores or uploads: your IP address (it is scrubbed from every message).

The risks: anyone watching your connection (your provider, your employer, the state) can see
that this computer repeatedly contacts blocked services and a measurement tool's control sites.
In some countries, measuring or circumventing censorship, or having such software, is illegal or
dangerous, and published measurements can be linked to your network. Do not run it where that
puts you or others at risk. You can stop at any time (Ctrl-C; delete the store to forget).
"""

HOW = (f"give consent on a terminal (`probe init`), or, for an unattended service, with --i-consent, "
       f"{ENV}=1 or `informed_consent: true` in the settings of the targets file")


def consent_file() -> Path:
    return config_dir() / "consent"


def recorded() -> bool:
    try:
        return consent_file().read_text(encoding="utf-8").split()[0] == NOTICE_VERSION
    except (OSError, IndexError):
        return False


def record() -> None:
    path = consent_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{NOTICE_VERSION} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n", encoding="utf-8")


def given(flag: bool, settings: Settings | None) -> bool:
    """Consent given without asking: the flag, the environment, the settings, or recorded earlier."""
    return (flag or os.environ.get(ENV, "") in ("1", "yes", "true")
            or (settings is not None and settings.informed_consent) or recorded())


def ask(stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> bool:
    """Show the notice and ask; True when the answer is the consent sentence (recorded then)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    stdout.write(NOTICE + f"\nTo consent, type \"{ANSWER}\" (anything else stops): ")
    stdout.flush()
    answer = stdin.readline().strip().strip('"').lower()
    if answer != ANSWER.lower():
        stdout.write("No consent given: nothing was measured.\n")
        return False
    record()
    stdout.write(f"Thank you. Recorded in {consent_file()}.\n\n")
    return True


def require(flag: bool, settings: Settings | None) -> bool:
    """True when measuring may start; asks on a terminal, else prints how to consent (caller exits 2)."""
    if given(flag, settings):
        return True
    if sys.stdin.isatty() and sys.stdout.isatty():
        return ask()
    print(f"probe: informed consent needed before measuring, and there is no terminal to ask on: {HOW}.",
          file=sys.stderr)
    return False


def add_argument(parser: Any) -> None:
    parser.add_argument("--i-consent", action="store_true",
                        help=f"I have read the notice (README, `probe init`) and consent; also {ENV}=1")


if __name__ == "__main__":  # scripts/install-service: ask on this terminal for the unattended service
    sys.exit(0 if ask() else 2)
