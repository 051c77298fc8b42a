"""How diagnostics feed verdicts (pure): each result becomes a finding stated with its evidence.

A finding says whether it shows censorship (True), shows the opposite (False: the RST
came from the server itself) or cannot tell (None: skipped, nothing located). ``annotate``
adds the findings to a target's verdict: the reason gains the statements, the evidence
gains the record ids, ``details.diagnostics`` the findings. It never flips a verdict by
itself: the decision table stays the one place that decides; diagnostics explain it
("an SNI RST that comes from hop 3 of 8 is censorship, stated with evidence").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from probe.core.records import CheckResult, Verdict


@dataclass(frozen=True)
class Finding:
    kind: str
    censorship: bool | None
    statement: str
    evidence: tuple[str, ...]
    result_id: str


def _localise(d: Any) -> tuple[bool | None, str, tuple[str, ...]]:
    loc = d.location
    if not loc.found:
        return None, f"no censor reaction between ttl {d.target_hops[0].ttl if d.target_hops else '?'} and the " \
                     f"server for {d.sni!r} ({d.probes} probes)", ()
    routers = f" of {loc.server_ttl - 1}" if loc.server_ttl else ""
    before_server = loc.server_ttl is None or loc.reacting_ttl < loc.server_ttl
    what = {"rst": "an RST", "drop": "a drop", "blockpage": "a block page", "throttle": "throttling"}[loc.reaction]
    if loc.sni_specific and before_server:
        return True, (f"{what} for SNI {d.sni!r} comes from hop {loc.censor_hop}{routers}, before the server, and "
                      f"not for the control SNI: censorship"), loc.evidence
    if before_server:
        return True, (f"{what} at hop {loc.censor_hop}{routers}, before the server, for the control SNI too: the "
                      f"address is filtered on the path"), loc.evidence
    return None, f"{what} only at the server's own distance (ttl {loc.reacting_ttl}): the server may send it", \
        loc.evidence


def _rst(d: Any) -> tuple[bool | None, str, tuple[str, ...]]:
    if not d.rsts:
        return None, f"no RST on the flow to {d.address}:{d.port}", ()
    evidence = tuple(f"rst ttl {r.ttl} ip_id {r.ip_id} window {r.window} flags {r.flags}: "
                     + ("; ".join(r.reasons) or "like the server's packets") for r in d.rsts)
    if d.injected:
        r = next(r for r in d.rsts if r.injected)
        return True, (f"the RST on {d.address}:{d.port} was injected: sent ~{r.hops_away} hops away, the server is "
                      f"{r.server_hops_away} hops away"), evidence
    if d.baseline == "none":
        return None, "an RST with nothing from the server to compare it with", evidence
    return False, f"the RST on {d.address}:{d.port} matches the server's own packets: the server sent it", evidence


def _dns(d: Any) -> tuple[bool | None, str, tuple[str, ...]]:
    evidence = tuple(f"{q.server}{' (no DNS server)' if q.silent else ''}: "
                     + ", ".join(f"{a.src} ttl {a.ip_ttl} {a.rcode} {list(a.addresses)} at {a.after_ms} ms"
                                 for a in q.answers) + (f" — {'; '.join(q.reasons)}" if q.reasons else "")
                     for q in d.queries)
    if d.injected:
        return True, f"DNS answers for {d.host} are injected on the path (forged: {', '.join(d.forged_addresses)})", \
            evidence
    return False, f"no DNS injection seen for {d.host}", evidence


def finding(result: CheckResult[Any]) -> Finding:
    d = result.details
    if getattr(d, "skipped", False):
        return Finding(d.kind, None, f"{d.kind} skipped: {d.skip_reason}", (), result.id)
    censorship, statement, evidence = {"localise": _localise, "rst": _rst, "dns_injection": _dns}[d.kind](d)
    return Finding(d.kind, censorship, statement, evidence, result.id)


def findings(results: Sequence[CheckResult[Any]]) -> list[Finding]:
    return [finding(r) for r in results if r.check == "diagnostics"]


def annotate(verdict: Verdict, results: Sequence[CheckResult[Any]]) -> Verdict:
    """The verdict with the diagnostics' statements and evidence added; the decision itself unchanged."""
    found = findings(results)
    if not found:
        return verdict
    shown = [f for f in found if f.censorship is not None]
    reason = verdict.reason + ("" if not shown else " Diagnostics: " + "; ".join(f.statement for f in shown) + ".")
    censorship = True if any(f.censorship for f in found) else (False if shown else None)
    details = {**verdict.details, "diagnostics": [dataclasses.asdict(f) for f in found],
               "diagnostics_censorship": censorship}
    return dataclasses.replace(verdict, reason=reason, evidence=(*verdict.evidence, *(f.result_id for f in found)),
                               details=details)
