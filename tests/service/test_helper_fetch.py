"""The test helper's page fetch (``POST /fetch``), against a real HTTP server on 127.0.0.1: the redirect
chain with every hop's fields, the hop bound, the body cap, the probe's User-Agent, bad requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from probe.service import helper
from probe.service.httpd import Request, Response, connection_handler, page

SEEN_AGENTS: list[str] = []


async def site(request: Request) -> Response:
    SEEN_AGENTS.append(request.headers.get("user-agent", ""))
    if request.path == "/":
        return Response(302, b"", {"Location": "/b"})
    if request.path == "/b":
        return Response(301, b"", {"Location": "/c"})
    if request.path == "/c":
        return Response(200, page("Real page", "hello"), {"Content-Language": "en", "X-Site": "1"})
    if request.path == "/loop":
        return Response(302, b"", {"Location": "/loop"})
    if request.path == "/big":
        return Response(200, b"<html><title>big</title>" + b"x" * (helper.MAX_BODY + 4096))
    return Response(404, page("not found", request.path))


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    server = await asyncio.start_server(connection_handler(site), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def ask(body: object, allow_bogons: bool = True) -> tuple[int, dict[str, object]]:
    app = helper.handle(timeout=3.0, allow_bogons=allow_bogons)  # loopback is a bogon: allowed for these tests
    response = await app(Request("POST", "/fetch", {}, json.dumps(body).encode()))
    assert isinstance(response.body, bytes)
    return response.status, json.loads(response.body)


async def test_fetch_follows_redirects_and_reports_every_hop(origin: str) -> None:
    status, body = await ask({"url": origin + "/", "user_agent": "probe-test/1"})
    assert status == 200
    hops = body["hops"]
    assert [h["status"] for h in hops] == [302, 301, 200]  # type: ignore[index]
    last = hops[-1]  # type: ignore[index]
    assert last["url"] == origin + "/c" and last["title"] == "Real page" and last["lang"] == "en"
    assert "x-site" in last["header_names"] and last["body_length"] == len(page("Real page", "hello"))
    assert last["body_sha256"] and last["shape"] and last["failure"] is None
    assert SEEN_AGENTS[-1] == "probe-test/1"  # the probe's User-Agent: an origin that refuses bots refuses both


async def test_fetch_is_bounded(origin: str) -> None:
    _, looped = await ask({"url": origin + "/loop"})
    assert len(looped["hops"]) == helper.MAX_HOPS + 1  # type: ignore[arg-type]
    _, big = await ask({"url": origin + "/big"})
    hop = big["hops"][0]  # type: ignore[index]
    assert hop["body_truncated"] is True and hop["body_length"] == helper.MAX_BODY


async def test_fetch_reports_a_failed_hop(origin: str) -> None:
    port = int(origin.rsplit(":", 1)[1])
    server = await asyncio.start_server(connection_handler(site), "127.0.0.1", 0)
    free = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert free != port
    _, body = await ask({"url": f"http://127.0.0.1:{free}/"})
    assert body["hops"][0]["status"] is None and body["hops"][0]["failure"] == "connection_refused"  # type: ignore[index]


async def test_fetch_refuses_bogon_addresses(origin: str) -> None:
    """A deployed helper cannot be made to fetch from its own network (loopback, private addresses)."""
    count = len(SEEN_AGENTS)
    _, body = await ask({"url": origin + "/c"}, allow_bogons=False)
    assert body["hops"][0]["failure"] == "dns_bogon_error" and len(SEEN_AGENTS) == count  # type: ignore[index]


@pytest.mark.parametrize("bad", [{"url": "ftp://127.0.0.1/"}, {"url": "http:///x"}, {"url": 3}, [],
                                 {"url": "http://127.0.0.1/", "user_agent": 5}, {"url": "http://a/" + "x" * 3000}])
async def test_fetch_rejects_bad_requests(bad: object) -> None:
    status, body = await ask(bad)
    assert status == 400 and "error" in body
