"""Circumvention reachability: do the ways around a block (VPNs, proxies, Tor) still work?

One module per protocol (openvpn, wireguard, mtproto, proxies, tor), each with
``async check_X(endpoint..., ctx, *, target, role) -> CheckResult[CircumventionDetails]``.
Every result says what it proved, in a fixed vocabulary (``status``):

- ``answered``: the server spoke the protocol back (and, where the protocol allows,
  proved it holds the secret: an OpenVPN ack of our session id, a WireGuard response
  that decrypts, an MTProto fake-TLS HMAC, a resPQ echoing our nonce);
- ``silent``: the network let us through (or we cannot tell) and the server said
  nothing, which is the protocol's *designed* answer to a client without the right
  secret (tls-auth, WireGuard, MTProto, obfs4). Never reported as blocking;
- ``blocked``: connect failed, the connection was reset after the first protocol
  packet, or a server that must answer stayed silent;
- ``inconclusive``: the check could not run or got an answer it cannot interpret.

docs/circumvention.md has the per-protocol schema and the decision rules;
:mod:`probe.analysis.circumvention` maps statuses to the verdict's ``blocking``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from probe.analysis.circumvention import (
    ANSWERED,
    BLOCKED,
    INCONCLUSIVE,
    SILENT,
    STATUSES,
    TEST_NAME,
    Status,
)
from probe.core.records import CheckResult, Role
from probe.core.registry import register_options

Protocol = Literal["openvpn", "wireguard", "mtproto", "socks5", "http_connect", "tor_or", "tor_dir", "obfs4"]
PROTOCOLS: Final[frozenset[str]] = frozenset(Protocol.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CircumventionDetails:
    """The ``test_keys`` of a circumvention record (metrics read ``protocol`` and ``status``).

    ``evidence`` says in words what the status rests on; ``secret_sha256`` is a short
    hash of the secret used (never the secret itself), so that two records can be
    compared without leaking the key.
    """

    protocol: str
    status: str
    transport: str  # "tcp" or "udp"
    address: str
    port: int
    evidence: str
    secret_sha256: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


def secret_hash(secret: bytes | str | None) -> str | None:
    """First 16 hex digits of SHA-256: enough to tell keys apart, useless to an attacker."""
    if secret is None:
        return None
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()[:16]


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def make_result(
    details: CircumventionDetails,
    *,
    target: str,
    role: Role,
    start: float,
    runtime: float,
    failure: str | None = None,
    failed_operation: str | None = None,
    timings: Mapping[str, float] | None = None,
) -> CheckResult[CircumventionDetails]:
    """A circumvention CheckResult: ``ok`` means the protocol answered."""
    return CheckResult(
        check=TEST_NAME,
        target=target,
        input=f"{details.protocol}://{endpoint(details.address, details.port)}/{details.transport}",
        ok=details.status == ANSWERED,
        failure=failure,
        failed_operation=failed_operation if failure is not None else None,
        start_time=start,
        runtime=runtime,
        details=details,
        role=role,
        timings=dict(timings or {}),
    )


__all__ = [
    "ANSWERED", "BLOCKED", "INCONCLUSIVE", "PROTOCOLS", "SILENT", "STATUSES", "TEST_NAME",
    "CircumventionDetails", "Protocol", "Status", "endpoint", "make_result", "secret_hash",
]


_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "wireguard": ("server_public_key",), "mtproto": ("link",), "obfs4": ("cert",),
}


def validate(options: Mapping[str, Any]) -> list[str]:
    """Problems with a target's options, for the config loader (empty: fine)."""
    protocol = options.get("protocol")
    if protocol not in PROTOCOLS:
        return [f"options.protocol must be one of {', '.join(sorted(PROTOCOLS))}, not {protocol!r}"]
    if "secrets_file" in options:
        return []  # required keys may come from the secrets file, checked at run time
    required = _REQUIRED.get(str(protocol), ())
    return [f"options.{key} is required for {protocol}" for key in required if key not in options]


register_options(TEST_NAME, validate)
