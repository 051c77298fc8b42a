"""One probe's view of each service: its targets' last verdicts rolled up into one state.

The fleet counts probes per (service, network), not targets: a service is blocked in a network when
its probes see it blocked, whichever of the service's targets shows it. Rolling the per-target
verdicts up here, on the probe where they are, lets each probe export one small gauge per service
(``probe_service_state``, docs/metrics.md) instead of the central store aggregating millions of
per-target series once a minute (bench/fleet_metrics.py measures both).

A target's state, from its last verdict (docs/verdicts.md):

=================  ==================================================================
``inconclusive``   no verdict could be drawn (``blocking`` is None): the controls failed
                   too, an outage or an offline probe, not censorship
``throttling``     -> ``throttled``: the throughput test says throttled
``origin-withheld``  the origin itself refuses this country (HTTP 451 over verified TLS):
                   not the network's doing, so not counted as blocked
any other type     -> ``blocked``: the network blocks it (dns, tcp_ip, tls, http-*, quic, ...)
accessible         -> ``ok``
=================  ==================================================================

(A verdict that is neither accessible nor names a type nor is inconclusive does not occur; it
counts as ``blocked``, as the former recording rule ``(1 - accessible) * (1 - inconclusive)`` did.)

A service's state is the first of :data:`SERVICE_STATES` that any of its targets is in: blocking
outranks throttling, both outrank what the origin withholds, and a service is ``ok`` only when
every target was accessible. So a service is in exactly one state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: In order of precedence: a service is in the first state any of its targets is in.
SERVICE_STATES: Final[tuple[str, ...]] = ("blocked", "throttled", "origin-withheld", "inconclusive", "ok")
_RANK: Final = {state: i for i, state in enumerate(SERVICE_STATES)}


def target_state(blocking: str | None, accessible: bool | None, inconclusive: bool) -> str:
    """The state of one target from its last verdict (``blocking``: the type it names, or None)."""
    if inconclusive:
        return "inconclusive"
    if blocking == "throttling":
        return "throttled"
    if blocking == "origin-withheld":
        return "origin-withheld"
    if blocking or not accessible:
        return "blocked"
    return "ok"


def service_states(targets: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``(service, target state)`` pairs -> each service's state (the highest-ranked of its targets)."""
    out: dict[str, str] = {}
    for service, state in targets:
        current = out.get(service)
        if current is None or _RANK[state] < _RANK[current]:
            out[service] = state
    return out
