"""The circumvention family through the whole pipeline and verdict table, against a real SOCKS5 proxy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from probe.analysis.verdict import Controls
from probe.core.config import load_text
from probe.pipeline import measure_target
from tests.circumvention_servers import free_port, have, microsocks_argv, tcp_open, wait_for
from tests.loopback import closed_port

pytestmark = pytest.mark.skipif(not have("microsocks"), reason="microsocks not installed (scripts/test installs it)")


def _target(port: int) -> object:
    cfg = load_text(f"""
targets:
  - name: socks
    service: proxy
    category: circumvention
    addresses: [127.0.0.1]
    ports: [{port}]
    checks: [circumvention]
    options: {{protocol: socks5}}
""", "inline.yaml")
    return cfg.targets[0]


@pytest.fixture
def socks_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(microsocks_argv("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: tcp_open("127.0.0.1", port), 10)
        yield port
    finally:
        proc.kill()
        proc.wait(5)


async def test_answered_and_blocked_verdicts(ctx, socks_port: int) -> None:
    answered = await measure_target(_target(socks_port), ctx, Controls(network_ok=True))  # type: ignore[arg-type]
    assert (answered.verdict.rule, answered.verdict.accessible, answered.verdict.blocking) == (
        "circumvention_answered", True, False)
    assert [r.check for r in answered.results] == ["circumvention"]  # no TCP step for a family-only target
    refused = await measure_target(_target(closed_port()), ctx, Controls(network_ok=True))  # type: ignore[arg-type]
    assert refused.verdict.blocking == "circumvention" and refused.verdict.failure == "connection_refused"


def test_bad_options_name_the_place() -> None:
    from probe.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"inline.yaml:2: targets\[0\] \(vpn\).options"):
        load_text("targets:\n  - {name: vpn, service: v, category: circumvention, addresses: [198.18.0.9], "
                  "checks: [circumvention], options: {protocol: pptp}}\n", "inline.yaml")
