"""Learning the probe's own addresses (interfaces, the test helper, sockets) and scrubbing them from
records at the choke point and from the logs. Servers on loopback; 203.0.113.9 is only ever text."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from probe.analysis.verdict import Controls
from probe.checks import control
from probe.core.config import Target
from probe.core.context import Context
from probe.core.privacy import SCRUBBED, AddressBook
from probe.pipeline import measure_target
from probe.service import helper
from probe.service.addresses import ScrubFilter, interface_addresses, scrub_logs
from probe.service.httpd import Request, Response, connection_handler, page

PUBLIC = "203.0.113.9"  # documentation range: the probe's "public address" in these tests, text only

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.0
           /24 link UNICAST
        |-- 192.0.2.2
           /32 host LOCAL
        |-- 192.0.2.7
           /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 127.0.0.1
        /32 host LOCAL
"""
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
20010db8000100020000000000000abc 02 40 00 00     eth0
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
"""


def test_interface_addresses_from_proc(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    found = interface_addresses(tmp_path)
    assert found == sorted(["192.0.2.2", "192.0.2.7", "127.0.0.1", "::1", "2001:db8:1:2::abc",
                            "fe80::fc:ff:fe00:1"])


def test_interface_addresses_without_proc_falls_back(tmp_path: Path) -> None:
    found = interface_addresses(tmp_path)  # no fib_trie: ioctl per interface and the host name
    assert isinstance(found, list)


def test_interface_addresses_of_this_namespace_include_its_own() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet: connect() on UDP only routes
        try:
            s.connect(("198.18.0.1", 9))
        except OSError:
            pytest.skip("no IPv4 route in this namespace")
        source = s.getsockname()[0]
    assert source in interface_addresses()


def test_the_log_filter_scrubs_message_fields_and_traceback() -> None:
    book = AddressBook()
    book.learn(PUBLIC)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(fields)s"))
    handler.addFilter(ScrubFilter(book))
    log = logging.getLogger("probe.test.privacy")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("answer was %s", PUBLIC, extra={"fields": {"address": f"{PUBLIC}:443"}})
        try:
            raise OSError(f"cannot reach {PUBLIC}")
        except OSError:
            log.exception("failed", extra={"fields": {}})
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert PUBLIC not in text
    assert text.count(SCRUBBED) == 3, text


def test_scrub_logs_installs_one_filter_per_handler() -> None:
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger("probe")
    root.addHandler(handler)
    try:
        scrub_logs(AddressBook())
        scrub_logs(AddressBook())
        assert sum(isinstance(f, ScrubFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def _json(status: int, body: object) -> httpx.Response:
    """A helper's answer as a stream, as the network gives it (the control reads it capped)."""
    return httpx.Response(status, stream=httpx.ByteStream(json.dumps(body).encode()),
                          headers={"content-type": "application/json"})


async def test_control_learns_the_public_address_from_the_helper_and_never_records_it() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return _json(200, {"tcp": {"ok": True, "failure": None}, "client": PUBLIC})

    ctx = Context(http_transport=httpx.MockTransport(answer))
    result = await control.ask("https://helper.test/", "192.0.2.10", 443, None, ctx, target="t")
    assert result.ok and result.details.tcp_ok
    assert PUBLIC not in json.dumps(result.details.__dict__)
    assert ctx.own.current().mine(ipaddress.ip_address(PUBLIC))


async def test_the_helper_tells_the_client_its_address() -> None:
    app = helper.handle(timeout=1.0)
    request = Request("POST", "/check", {}, json.dumps({"address": "127.0.0.1", "port": 9, "sni": None}).encode(),
                      peer=PUBLIC)
    response = await app(request)
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["client"] == PUBLIC


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """An HTTP server that tells the client its 'public' address everywhere, as a real site might."""

    async def app(_: Request) -> Response:
        headers = {"X-Client-IP": PUBLIC, "Set-Cookie": f"v={PUBLIC}", "Location": f"http://x.test/?ip={PUBLIC}"}
        return Response(302, page(f"Your IP address is {PUBLIC}", PUBLIC), headers)

    server = await asyncio.start_server(connection_handler(app), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_every_record_leaves_the_pipeline_scrubbed(echo_server: int) -> None:
    ctx = Context()
    ctx.own.learn(PUBLIC)
    target = Target(name="svc", service="svc", category="messaging", addresses=("127.0.0.1",),
                    ports=(echo_server,), checks=("tcp", "http"), sni="good.test", urls=(f"http://good.test:{echo_server}/",))
    outcome = await measure_target(target, ctx, Controls(network_ok=True))
    http = next(r for r in outcome.results if r.check == "http")
    assert http.details.title == f"Your IP address is {PUBLIC}"  # measured as it came...
    records = outcome.records(ctx.meta)
    assert PUBLIC not in json.dumps(records)  # ...and never leaves the pipeline
    http_record = next(r for r in records if r["test_name"] == "http")
    assert http_record["test_keys"]["title"] == f"Your IP address is {SCRUBBED}"
    assert http_record["test_keys"]["scrubbed"] == 5  # title, X-Client-IP, Set-Cookie, Location header + field
    assert "127.0.0.1" in json.dumps(records)  # loopback is nobody's identity: the target stays


async def test_whoami_learns_our_public_address_before_measuring() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/whoami")
        return _json(200, {"client": PUBLIC})

    ctx = Context(http_transport=httpx.MockTransport(answer))
    assert await control.whoami("https://helper.test/", ctx)
    assert ctx.own.current().mine(ipaddress.ip_address(PUBLIC))


async def test_whoami_of_an_old_or_broken_helper_is_no_error() -> None:
    def old(_: httpx.Request) -> httpx.Response:
        return _json(404, {"error": "POST /check"})

    ctx = Context(http_transport=httpx.MockTransport(old))
    assert not await control.whoami("https://helper.test/", ctx)
    assert not ctx.own.current()


async def test_the_helper_answers_whoami() -> None:
    response = await helper.handle()(Request("GET", "/whoami", {}, b"", peer=PUBLIC))
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"client": PUBLIC}
