"""Raw-packet diagnostics: locate the censor, fingerprint injected RSTs, catch DNS injection.

Off by default: a target runs them only when its ``checks`` list ``diagnostics``. They are
more intrusive than the other checks (TTL-limited packets that make routers answer with
ICMP, repeated handshakes) and need raw sockets; without CAP_NET_RAW every check returns
a result whose details say ``skipped`` and why (``failure: operation_not_permitted``),
never a crash and never a fake success. docs/diagnostics.md describes each check.

Options (``Target.options``, all optional; budgets bound what one target may cost)::

    diag_kinds: [localise, rst, dns_injection]   # which diagnostics run
    diag_min_ttl: 1          diag_max_ttl: 16      # TTL range of the localisation sweep (1..32)
    diag_max_probes: 40      # TCP connections one target may open (all kinds together)
    diag_wait: 1.0           # seconds to wait for a reaction at one TTL (0.1..10)
    diag_throttle: auto      # auto | off: trigger-TTL sweep when nothing blocks outright
    diag_throttle_path: /    # what to download after the trigger (lab: /large?bytes=20000)
    diag_throttle_ratio: 4   # throttled when the rate is this many times below the control's
    diag_rst_closed_port: (none)  # also fingerprint the RST of a port with no listener
    diag_dns_silent: []      # addresses on the path that run no DNS (default: the target's)
    diag_dns_wait: 2.0       # seconds to keep listening after a DNS query
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from probe.core.registry import register_options

KINDS: Final = ("localise", "rst", "dns_injection")
THROTTLE_MODES: Final = ("auto", "off")


class OptionError(ValueError):
    """A bad ``diag_*`` option; the message names the key."""


def _num(options: Mapping[str, Any], key: str, default: float, low: float, high: float, integer: bool) -> Any:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise OptionError(f"options.{key}: {value!r} is not a {'whole ' if integer else ''}number")
    if not low <= value <= high:
        raise OptionError(f"options.{key}: {value!r} is outside {low}..{high}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Options:
    """The diagnostics' budgets and switches, parsed from ``Target.options`` once."""

    kinds: tuple[str, ...] = KINDS
    min_ttl: int = 1
    max_ttl: int = 16
    max_probes: int = 40
    wait: float = 1.0
    throttle: str = "auto"
    throttle_path: str = "/"
    throttle_ratio: float = 4.0
    rst_closed_port: int | None = None
    dns_silent: tuple[str, ...] = ()
    dns_wait: float = 2.0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        kinds = options.get("diag_kinds", list(KINDS))
        if not isinstance(kinds, list | tuple) or not kinds or any(k not in KINDS for k in kinds):
            raise OptionError(f"options.diag_kinds: {kinds!r}: a non-empty list of {', '.join(KINDS)}")
        min_ttl = _num(options, "diag_min_ttl", 1, 1, 32, True)
        max_ttl = _num(options, "diag_max_ttl", 16, 1, 32, True)
        if min_ttl > max_ttl:
            raise OptionError(f"options.diag_min_ttl {min_ttl} is above diag_max_ttl {max_ttl}")
        throttle = options.get("diag_throttle", "auto")
        if throttle is True or throttle is False:
            throttle = "auto" if throttle else "off"
        if throttle not in THROTTLE_MODES:
            raise OptionError(f"options.diag_throttle: {throttle!r}: one of {', '.join(THROTTLE_MODES)}")
        path = options.get("diag_throttle_path", "/")
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n"):
            raise OptionError(f"options.diag_throttle_path: {path!r} is not a request path")
        closed = options.get("diag_rst_closed_port")
        if closed is not None:
            closed = _num(options, "diag_rst_closed_port", 0, 1, 65535, True)
        silent = options.get("diag_dns_silent", [])
        if not isinstance(silent, list | tuple) or not all(isinstance(a, str) for a in silent):
            raise OptionError(f"options.diag_dns_silent: {silent!r} is not a list of addresses")
        return cls(
            kinds=tuple(kinds), min_ttl=min_ttl, max_ttl=max_ttl,
            max_probes=_num(options, "diag_max_probes", 40, 1, 200, True),
            wait=_num(options, "diag_wait", 1.0, 0.1, 10, False),
            throttle=str(throttle), throttle_path=path,
            throttle_ratio=_num(options, "diag_throttle_ratio", 4.0, 1.5, 1000, False),
            rst_closed_port=closed, dns_silent=tuple(silent)[:4],
            dns_wait=_num(options, "diag_dns_wait", 2.0, 0.2, 10, False),
        )


@dataclass(frozen=True)
class SkippedDetails:
    """What a diagnostic that could not run records instead of results."""

    kind: str
    skipped: bool
    skip_reason: str
    address: str | None = None
    port: int | None = None


def validate(options: Mapping[str, Any]) -> list[str]:
    """The family's option schema, for the config loader (empty: fine)."""
    try:
        Options.parse(options)
    except OptionError as exc:
        return [str(exc)]
    return []


register_options("diagnostics", validate)
