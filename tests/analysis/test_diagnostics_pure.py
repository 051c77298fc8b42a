"""The diagnostics' pure parts: options, localisation and throttle decisions, RST fingerprint, DNS
judgement, verdict statements, and the skip path without raw sockets (no root needed)."""

from __future__ import annotations

import pytest

from probe.analysis.diagnostics import annotate, findings
from probe.core.config import Target
from probe.core.records import CheckResult, Verdict
from probe.diagnostics import OptionError, Options, SkippedDetails
from probe.diagnostics._net import Seen, client_hello
from probe.diagnostics.dnsinject import Answer, Query, forged, judge
from probe.diagnostics.localise import Hop, LocaliseDetails, ThrottleProbe, locate, locate_throttle, response_outcome
from probe.diagnostics.rst import RSTDetails, fingerprint


def icmp(ttl: int) -> Hop:
    return Hop(ttl, "icmp", f"198.18.1.{ttl}")


CONTROL = [icmp(1), icmp(2), icmp(3), icmp(4), Hop(5, "response")]


def test_options_defaults_and_errors() -> None:
    assert Options.parse({}).max_ttl == 16 and Options.parse({}).kinds == ("localise", "rst", "dns_injection")
    assert Options.parse({"diag_throttle": False}).throttle == "off"
    for bad in ({"diag_max_ttl": 99}, {"diag_min_ttl": 5, "diag_max_ttl": 3}, {"diag_kinds": ["ping"]},
                {"diag_wait": "x"}, {"diag_throttle_path": "no-slash"}, {"diag_max_probes": 1.5}):
        with pytest.raises(OptionError, match="options.diag_"):
            Options.parse(bad)


@pytest.mark.parametrize(("target", "reaction", "hop"), [
    ([icmp(1), icmp(2), icmp(3), Hop(4, "rst", rst_ttl=62)], "rst", 3),
    ([icmp(1), icmp(2), icmp(3), Hop(4, "silence"), Hop(5, "silence")], "drop", 3),
    ([icmp(1), Hop(2, "blockpage")], "blockpage", 1),
])
def test_locate_first_reaction(target: list[Hop], reaction: str, hop: int) -> None:
    loc = locate(target, CONTROL)
    assert (loc.found, loc.reaction, loc.censor_hop, loc.sni_specific, loc.server_ttl) == (True, reaction, hop, True, 5)


def test_a_lost_probe_is_not_a_censor() -> None:
    target = [icmp(1), Hop(2, "silence"), icmp(3), icmp(4), Hop(5, "response")]
    assert locate(target, CONTROL).found is False


def test_control_meeting_the_same_rst_is_not_sni_specific() -> None:
    control = [icmp(1), Hop(2, "rst")]
    loc = locate([icmp(1), Hop(2, "rst")], control)
    assert loc.found and loc.sni_specific is False


def test_throttle_location() -> None:
    base = ThrottleProbe(4, "control.test", 50000.0, 20000, 0.003)
    probes = [ThrottleProbe(t, "x.test", 40000.0, 20000, 0.004) for t in (1, 2)]
    probes.append(ThrottleProbe(3, "x.test", 120.0, 20000, 1.3))
    loc = locate_throttle(probes, base, 4, server_ttl=5)
    assert (loc.reaction, loc.censor_hop) == ("throttle", 2)
    assert not locate_throttle(probes[:2], base, 4, server_ttl=5).found


def test_response_outcome_recognises_block_pages() -> None:
    assert response_outcome(b"\x16\x03\x03", "tls") == "response"
    assert response_outcome(b"HTTP/1.1 451 Unavailable\r\n\r\nno", "http") == "blockpage"
    assert response_outcome(b"HTTP/1.1 200 OK\r\n\r\nhello", "http") == "response"


def test_client_hello_carries_the_sni() -> None:
    hello = client_hello("web.telegram.test")
    assert hello[0] == 0x16 and b"web.telegram.test" in hello


def seen(ttl: int, flags: str, ip_id: int = 0, window: int = 0) -> Seen:
    return Seen(0.0, "198.18.10.10", "198.18.0.2", ttl, ip_id, "tcp", 443, 40000, flags, window)


def test_rst_with_another_ttl_is_injected() -> None:
    (finding,) = fingerprint([seen(62, "R")], [seen(60, "SA", window=65160)])
    assert finding.injected and (finding.hops_away, finding.server_hops_away) == (2, 4)


def test_rst_like_the_server_is_genuine() -> None:
    (finding,) = fingerprint([seen(60, "RA")], [seen(60, "SA", window=65160)])
    assert not finding.injected and finding.reasons == ()


def answer(src: str, addresses: tuple[str, ...], ttl: int = 64) -> Answer:
    return Answer(src, 53, ttl, "NOERROR", addresses, 1.0)


def test_dns_judgement() -> None:
    assert judge("198.18.0.1", False, [answer("198.18.0.1", ("198.18.40.40",))]) == (False, ())
    assert judge("198.18.10.11", True, [answer("198.18.10.11", ("198.18.40.40",))])[0]
    injected, reasons = judge("198.18.0.1", False, [answer("198.18.0.1", ("198.18.40.40",), 62),
                                                    answer("198.18.0.1", ("198.18.10.11",))])
    assert injected and any("conflicting" in r for r in reasons) and any("TTL" in r for r in reasons)
    assert judge("198.18.0.1", False, [answer("198.18.9.9", ("198.18.40.40",))])[0]
    q = Query("198.18.10.11", True, (answer("198.18.10.11", ("198.18.40.40",)),), True, ("x",))
    assert forged([q]) == ("198.18.40.40",)


def result(details: object) -> CheckResult[object]:
    return CheckResult("diagnostics", "t", "x", True, None, None, 0.0, 0.1, details)


def test_verdict_states_the_hop_with_evidence() -> None:
    loc = locate([icmp(1), icmp(2), Hop(3, "rst", rst_ttl=62)], [icmp(1), icmp(2), icmp(3), icmp(4), icmp(5),
                                                                  icmp(6), icmp(7), icmp(8), Hop(9, "response")])
    details = LocaliseDetails("localise", "198.18.10.10", 443, "tls", "x.test", "c.test", False, loc, probes=12)
    rst = RSTDetails("rst", "198.18.10.10", 443, False, fingerprint([seen(62, "R")], [seen(60, "SA")]), True, 60,
                     (0,), "same_flow")
    skipped = SkippedDetails("dns_injection", True, "packet socket: Operation not permitted (needs CAP_NET_RAW)")
    results = [result(details), result(rst), result(skipped)]
    verdict = Verdict("t", "s", "c", False, "tls", "tls_sni", "reset with the target SNI.", 0.0, ("a",))
    out = annotate(verdict, results)
    assert "hop 2 of 8" in out.reason and "censorship" in out.reason and "injected" in out.reason
    assert out.blocking == "tls" and out.evidence == ("a", *(r.id for r in results))
    assert out.details["diagnostics_censorship"] is True
    assert [f.censorship for f in findings(results)] == [True, True, None]


async def test_run_skips_without_raw_sockets(monkeypatch: pytest.MonkeyPatch, ctx) -> None:  # type: ignore[no-untyped-def]
    from probe.diagnostics import capability, dispatch

    reason = capability.raw_unavailable()
    assert reason is None or "raw" in reason or "packet" in reason
    monkeypatch.setattr(dispatch, "raw_unavailable", lambda: "raw IP socket: not permitted (needs CAP_NET_RAW)")
    target = Target("t", "s", "c", host="x.test", checks=("diagnostics",))
    results = await dispatch.run(target, ctx, ["198.18.10.10"])
    assert [r.details.kind for r in results] == ["localise", "rst", "dns_injection"]
    assert all(r.details.skipped and not r.ok and r.failure == "operation_not_permitted" for r in results)
    bad = await dispatch.run(Target("t", "s", "c", host="x.test", options={"diag_max_ttl": 0}), ctx, ["198.18.10.10"])
    assert all(r.details.skipped and "diag_max_ttl" in r.details.skip_reason for r in bad)
