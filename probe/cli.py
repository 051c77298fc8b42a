"""The ``probe`` command line: one module per subcommand under ``probe/commands/``.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function ``(args) -> int`` (the exit code). Configuration
errors exit 2 with the message naming file, line, key and value; a blocking is a
result, not an error, and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import probe.families  # noqa: F401  (registers the families' option schemas)
from probe import __version__
from probe.core.config import ConfigError
from probe.storage.store import StoreError

COMMANDS = ("init", "run", "targets", "show", "events", "export", "report", "daemon", "lab", "collector",
            "enrol", "upload", "status")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probe",
        description="Measure reachability, blocking and throttling of messaging and cloud "
        "endpoints, with controls that tell censorship from outages.",
    )
    parser.add_argument("--version", action="version", version=f"probe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"probe.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"probe: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"probe: store error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"probe {args.command}: needs the {extra!r} extra ({exc.name} is not installed): "
              f"pip install 'probe[{extra}]' (from a clone: pip install '.[{extra}]')", file=sys.stderr)
        return 2
    return code


# Packages only some commands need, by the extra that installs them (pyproject.toml): a volunteer's
# probe does not carry the collector's web server and database driver.
EXTRAS = {"starlette": "collector", "uvicorn": "collector", "psycopg": "collector", "psycopg_pool": "collector"}


if __name__ == "__main__":
    raise SystemExit(main())
