"""``probe enrol URL TOKEN``: join a collector; the credential is kept with mode 0600.

See :mod:`probe.fleet.enrol`. ``--mirror`` adds URLs tried in order after URL (for uploads too);
``--proxy`` (socks5://127.0.0.1:9050 for a local Tor, or http://...) is used for both.

Metrics go another way (docs/fleet.md, "Metrics path"): with ``--metrics-url`` (the central
VictoriaMetrics' remote-write URL) ``probe enrol`` also writes this probe's vmagent
configuration (probe id, country and ASN as labels, a bounded disk buffer) into
``$XDG_CONFIG_HOME/probe/vmagent/`` (``--vmagent-dir``), for deploy/vmagent/vmagent.service.

The probe id: the collector accepts from a probe only measurements with its own probe id, and
the measurements carry the local store's (``settings.probe_id``, else the one the store made on
first use). So ``probe enrol`` enrols under that id (``--probe-id`` overrides it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from probe.commands.show import add_store_arguments, store_path


def register(sub: Any) -> None:
    parser = sub.add_parser("enrol", help="enrol this probe with a collector (get its upload credential)",
                            description=__doc__)
    parser.add_argument("url", help="the collector, e.g. https://collector.example.org")
    parser.add_argument("token", help="the enrolment token the collector's operator gave you")
    parser.add_argument("--mirror", action="append", default=[], metavar="URL",
                        help="another URL of the same collector, tried after URL (repeatable)")
    parser.add_argument("--probe-id", help="the probe id to enrol under (default: the local store's, "
                        "the one the measurements carry)")
    parser.add_argument("--proxy", metavar="URL", help="socks5://HOST:PORT or http://HOST:PORT")
    parser.add_argument("--cacert", metavar="PEM", help="trust this CA for the collector's TLS certificate")
    parser.add_argument("--config", metavar="PATH", type=Path,
                        help="where to keep the credential (default $XDG_CONFIG_HOME/probe/fleet.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing enrolment")
    parser.add_argument("--metrics-url", metavar="URL",
                        help="the central VictoriaMetrics' remote-write URL: also write this probe's vmagent config")
    parser.add_argument("--metrics-user", metavar="NAME", help="basic-auth user for --metrics-url")
    parser.add_argument("--metrics-password-file", metavar="PATH", type=Path,
                        help="file holding the basic-auth password for --metrics-url (copied with mode 0600)")
    parser.add_argument("--vmagent-dir", metavar="DIR", type=Path,
                        help="where to write the vmagent config (default $XDG_CONFIG_HOME/probe/vmagent)")
    add_store_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from probe.core.config import ConfigError
    from probe.fleet.enrol import EnrolError, config_path, enrol, save, tls_verify
    from probe.storage.store import StoreError

    path = args.config or config_path()
    if path.exists() and not args.force:
        print(f"probe enrol: {path} exists (already enrolled); --force replaces it", file=sys.stderr)
        return 2
    try:
        probe_id = args.probe_id or _store_probe_id(args)
    except (StoreError, ConfigError) as exc:
        print(f"probe enrol: cannot read this probe's id: {exc}", file=sys.stderr)
        return 2
    try:
        enrolment = enrol([args.url, *args.mirror], args.token, probe_id=probe_id, proxy=args.proxy,
                          verify=tls_verify(args.cacert))
    except EnrolError as exc:
        print(f"probe enrol: {exc}", file=sys.stderr)
        return 1
    save(enrolment, path)
    print(f"enrolled as {enrolment.probe_id}; credential kept in {path} (mode 0600)")
    if args.metrics_url:
        return _vmagent(args, enrolment.probe_id, path.parent)
    return 0


def _vmagent(args: argparse.Namespace, probe_id: str, config_dir: Path) -> int:
    """This probe's vmagent configuration, labelled with its id, country and ASN."""
    from probe.commands._home import load_config
    from probe.core.config import ConfigError
    from probe.fleet.vmagent import vmagent_config

    try:
        settings = load_config(args.targets).settings
        password = args.metrics_password_file.read_text().strip() if args.metrics_password_file else None
        files = vmagent_config(args.vmagent_dir or config_dir / "vmagent", probe_id=probe_id,
                               cc=settings.probe_cc or "ZZ", asn=settings.probe_asn or "AS0",
                               remote_write_url=args.metrics_url, username=args.metrics_user, password=password)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"probe enrol: vmagent configuration not written: {exc}", file=sys.stderr)
        return 2
    print(f"vmagent configuration in {files.env_file.parent} (deploy/vmagent/vmagent.service reads "
          f"{files.env_file.name})")
    return 0


def _store_probe_id(args: argparse.Namespace) -> str:
    """The id the measurements carry: settings.probe_id, else the store's (made now if new)."""
    from probe.commands._home import load_config
    from probe.storage.store import Store

    configured = None if args.store else load_config(args.targets).settings.probe_id
    with Store(store_path(args), retention_days=None) as store:
        return store.probe_id(configured)
