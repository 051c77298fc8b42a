"""measure_target and run_once end to end against loopback servers: the verdict and its evidence."""

from __future__ import annotations

from pathlib import Path

from probe.analysis.verdict import Controls
from probe.core import failures as F
from probe.core.config import Target, load_text
from probe.pipeline import measure_target
from probe.service.runner import run_once
from tests.conftest import make_context, server_context
from tests.loopback import DNSServer, Server, closed_port, http_app, rst_app


def pinned(port: int, **kw: object) -> Target:
    values: dict[str, object] = dict(
        name="svc", service="svc", category="messaging", addresses=("127.0.0.1",), ports=(port,),
        checks=("tcp", "tls", "http"), sni="good.test", urls=(f"https://good.test:{port}/",),
    )
    values.update(kw)
    return Target(**values)  # type: ignore[arg-type]


async def test_accessible_path(ctx, good_tls) -> None:
    async with Server(http_app, good_tls) as server:
        outcome = await measure_target(pinned(server.port), ctx, Controls(network_ok=True))
    v = outcome.verdict
    assert (v.accessible, v.blocking, v.rule) == (True, False, "accessible")
    assert [r.check for r in outcome.results] == ["tcp", "tls", "http"]
    records = outcome.records(ctx.meta)
    assert records[-1]["record_type"] == "verdict" and records[-1]["test_keys"]["evidence"]
    assert all(r["probe_id"] == "probe-test" for r in records)
    assert not any("probe_ip" in r or "client_ip" in r for r in records)


async def test_sni_filter_with_working_control_sni_is_tls_blocking(ctx, ca) -> None:
    """The server aborts every handshake whose SNI is good.test, like an SNI filter."""
    import ssl

    filtering = server_context(ca, "good.test")

    def refuse_target_sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE if name == "good.test" else None

    filtering.sni_callback = refuse_target_sni  # type: ignore[assignment]
    async with Server(http_app, filtering) as server:
        outcome = await measure_target(pinned(server.port), ctx, Controls(network_ok=True))
    tls_roles = [(r.role, r.ok) for r in outcome.results if r.check == "tls"]
    assert tls_roles == [("target", False), ("control", True)]
    assert (outcome.verdict.blocking, outcome.verdict.rule) == ("tls", "tls_sni")


async def test_reset_on_every_sni_is_inconclusive(ctx) -> None:
    async with Server(rst_app) as server:
        outcome = await measure_target(pinned(server.port), ctx, Controls(network_ok=True))
    assert outcome.verdict.rule == "tls_outage" and outcome.verdict.blocking is None
    assert outcome.verdict.failure == F.CONNECTION_RESET


async def test_refused_everywhere_is_tcp_ip_unless_control_host_fails(ctx) -> None:
    port = closed_port()
    blocked = await measure_target(pinned(port), ctx, Controls(network_ok=True))
    assert (blocked.verdict.blocking, blocked.verdict.failure) == ("tcp_ip", F.CONNECTION_REFUSED)
    outage = await measure_target(pinned(port, control_host="127.0.0.1"), ctx, Controls(network_ok=True))
    assert outage.verdict.rule == "tcp_outage" and outage.verdict.blocking is None
    assert any(r.role == "control" and r.check == "tcp" for r in outage.results)


async def test_http_reset_on_one_url_with_working_control_is_http_failure(ctx, good_tls) -> None:
    async with Server(http_app, good_tls) as server:
        target = pinned(server.port, urls=(f"https://good.test:{server.port}/reset",))
        outcome = await measure_target(target, ctx, Controls(network_ok=True))
    assert (outcome.verdict.blocking, outcome.verdict.rule) == ("http-failure", "http_failure")


async def test_run_once_with_dns_and_controls(ca_file: Path, good_tls) -> None:
    async with DNSServer() as dns_server, Server(http_app, good_tls) as server:
        cfg = load_text(f"""
settings:
  resolvers: [udp://127.0.0.1:{dns_server.port}]
targets:
  - name: control-local
    service: control
    category: control
    addresses: [127.0.0.1]
    ports: [{server.port}]
    checks: [tcp]
  - name: nx
    service: svc
    category: messaging
    host: nx.test
    checks: [dns]
  - name: up
    service: svc
    category: messaging
    addresses: [127.0.0.1]
    sni: good.test
    ports: [{server.port}]
    checks: [tcp, tls, http]
    urls: [https://good.test:{server.port}/]
""", "inline.yaml")
        ctx = make_context(ca_file, resolvers=cfg.settings.resolvers)
        seen: list[str] = []
        outcomes = await run_once(cfg, ctx, lambda o: seen.append(o.target.name))
    assert seen[0] == "control-local" and sorted(seen) == ["control-local", "nx", "up"]
    verdicts = {o.target.name: o.verdict for o in outcomes}
    assert verdicts["up"].blocking is False
    # No control resolver configured: NXDOMAIN alone cannot be called censorship.
    assert (verdicts["nx"].rule, verdicts["nx"].blocking) == ("dns_no_control", None)
