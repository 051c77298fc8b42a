"""End to end: each censorship technique, applied with real kernel mechanisms in the lab, gives the
expected verdict; each benign condition gives none. The cases are probe/lab/matrix.py's table."""

from __future__ import annotations

import pytest

from probe.lab.matrix import BLOCKPAGE_CASES, CASES, Case, run_case

pytestmark = pytest.mark.lab


OWN = [c for c in CASES if c not in BLOCKPAGE_CASES]  # those run in tests/lab/test_blockpages_lab.py


@pytest.mark.parametrize("case", OWN, ids=[c.name for c in OWN])
def test_technique(lab, case: Case) -> None:  # type: ignore[no-untyped-def]
    observed = run_case(lab, case)
    assert observed.problems() == [], observed.target["reason"]


def test_dns_injection_races_the_real_answer(lab) -> None:  # type: ignore[no-untyped-def]
    """The injected answer wins (the probe saw the sinkhole); the real resolver answered too, later."""
    from probe.lab.topology import SINKHOLE

    handle = lab.apply("dns_inject", host="api.telegram.test", answer=SINKHOLE)
    try:
        records = lab.run_probe(lab.targets_yaml(["api.telegram.test"]))
        script = ("import dns.message, dns.query, socket, time\n"
                  "q = dns.message.make_query('api.telegram.test', 'A')\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
                  "s.sendto(q.to_wire(), ('198.18.0.1', 53)); answers = []\n"
                  "try:\n"
                  "    while True: answers.append(dns.message.from_wire(s.recv(4096)).answer[0][0].to_text())\n"
                  "except Exception: pass\n"
                  "print(' '.join(answers))\n")
        # A sniffer in Python can miss a packet under load: up to three queries, each listened to for 2 s.
        for _ in range(3):
            seen = lab.exec(lab.ns_client, [__import__("sys").executable, "-c", script]).stdout.split()
            if seen[:1] == [SINKHOLE]:
                break
    finally:
        lab.remove(handle)
    system = next(r for r in records if r["test_name"] == "dns" and r["role"] == "target"
                  and r["target"] == "api.telegram.test")
    assert system["test_keys"]["addresses"] == [SINKHOLE]
    assert seen[:1] == [SINKHOLE] and "198.18.10.11" in seen[1:], seen


def test_nothing_applied_means_nothing_blocked(lab) -> None:  # type: ignore[no-untyped-def]
    names = ["web.telegram.test", "tg-cloud.cloud.test", "web.whatsapp.test", "t.me.test"]
    verdicts = lab.verdicts(lab.run_probe(lab.targets_yaml(names)))
    assert {n: verdicts[n]["blocking"] for n in names} == dict.fromkeys(names, False)


def test_clear_removes_every_rule(lab) -> None:  # type: ignore[no-untyped-def]
    lab.apply("ip_drop", subnet="198.18.20.0/24")
    lab.apply("sni_rst", sni="web.telegram.test")
    lab.apply("throttle_sni", sni="twitter.test", rate_kbit=128)
    lab.clear()
    rules = lab.exec(lab.ns_censor, ["iptables-save"]).stdout
    assert "198.18.20.0/24" not in rules and "web.telegram.test" not in rules and "CLASSIFY" not in rules
    assert "htb 1:1" in lab.exec(lab.ns_censor, ["tc", "class", "show", "dev", "left"]).stdout
    assert lab.exec(lab.ns_censor, ["tc", "class", "show", "dev", "left"]).stdout.count("class htb") == 1
