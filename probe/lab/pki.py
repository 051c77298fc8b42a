"""The lab's certificates: a lab CA the probe is told to trust, and the bad ones censors use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import trustme

from probe.lab.topology import HOSTS

NAMES = sorted(HOSTS) + [h.address for h in HOSTS.values()]


def make(state: Path) -> None:
    """Write ca.pem (trusted by the probe), server.pem, expired.pem and mitm.pem (untrusted CA)."""
    ca, rogue = trustme.CA(organization_name="probe lab CA"), trustme.CA(organization_name="Interception CA")
    ca.cert_pem.write_to_path(str(state / "ca.pem"))
    ca.issue_cert(*NAMES).private_key_and_cert_chain_pem.write_to_path(str(state / "server.pem"))
    expired = ca.issue_cert(*NAMES, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    expired.private_key_and_cert_chain_pem.write_to_path(str(state / "expired.pem"))
    rogue.issue_cert(*NAMES).private_key_and_cert_chain_pem.write_to_path(str(state / "mitm.pem"))
