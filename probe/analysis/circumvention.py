"""The circumvention rows of the decision table: pure, over the family's check results.

==========================  =============================================  ==========  ===============
rule                        when                                           accessible  blocking
==========================  =============================================  ==========  ===============
circumvention_answered      at least one endpoint answered in its          True        False
                            protocol (others failing are noted)
circumvention_outage        none answered, some are blocked, and the       None        None
                            same-network control host fails too
circumvention_blocked       none answered; an endpoint is blocked          False       "circumvention"
                            (connect failed, reset after the first
                            packet, or a server that must answer was
                            silent)
circumvention_silent        none answered or was blocked; a server was     None        False
                            silent as designed for a client without its
                            secret. Never blocking: silence is the
                            normal answer of tls-auth, WireGuard, MTProto
                            and obfs4 servers to strangers
circumvention_inconclusive  nothing else (tool missing, odd replies)       None        None
==========================  =============================================  ==========  ===============

``blocking`` gains a single value, ``"circumvention"``; which protocol is in the
reason and in each check record's ``test_keys.protocol``. ``probe.analysis.verdict`` runs
this row (after ``network_down``) for targets whose results include the family.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, Literal

from probe.analysis.rows import Row
from probe.core.records import CheckResult

TEST_NAME: Final = "circumvention"

# How one endpoint of the family answered (the checks set it, the rows below read it).
Status = Literal["answered", "silent", "blocked", "inconclusive"]
ANSWERED: Final = "answered"
SILENT: Final = "silent"
BLOCKED: Final = "blocked"
INCONCLUSIVE: Final = "inconclusive"
STATUSES: Final[frozenset[str]] = frozenset({ANSWERED, SILENT, BLOCKED, INCONCLUSIVE})

BLOCKING: Final = "circumvention"


def _where(results: Sequence[CheckResult[Any]]) -> str:
    return ", ".join(r.input for r in results[:4])


def decide(results: Sequence[CheckResult[Any]], control_host_ok: bool | None = None) -> Row | None:
    """The family's verdict, or None when no circumvention check ran (other rows decide)."""
    own = [r for r in results if r.check == TEST_NAME and r.role == "target"]
    if not own:
        return None
    by: dict[str, list[CheckResult[Any]]] = {}
    for r in own:
        by.setdefault(r.details.status, []).append(r)
    ids = tuple(r.id for r in own)
    if by.get(ANSWERED):
        ok = by[ANSWERED]
        others = [r for r in own if r.details.status != ANSWERED]
        note = f" ({len(others)} of {len(own)} did not, e.g. {others[0].input}: {others[0].details.status})" \
            if others else ""
        return Row("circumvention_answered", True, False,
                             f"{ok[0].details.protocol} answered at {_where(ok)}: {ok[0].details.evidence}{note}",
                             ids)
    if by.get(BLOCKED):
        blocked = by[BLOCKED]
        counts = Counter(r.failure for r in blocked if r.failure)
        failure = counts.most_common(1)[0][0] if counts else None
        what = f"{blocked[0].details.protocol} at {_where(blocked)}: {blocked[0].details.evidence}"
        if control_host_ok is False:
            return Row("circumvention_outage", None, None,
                                 f"{what}; the control host on the same network fails too: an outage", ids, failure)
        return Row("circumvention_blocked", False, BLOCKING, f"blocked: {what}", ids, failure)
    if by.get(SILENT):
        silent = by[SILENT]
        return Row("circumvention_silent", None, False,
                             f"{silent[0].details.protocol} at {_where(silent)}: {silent[0].details.evidence}; "
                             "not blocking", ids)
    first = own[0]
    return Row("circumvention_inconclusive", None, None,
                         f"{first.details.protocol} at {first.input}: {first.details.evidence}", ids, first.failure)
