"""Hostile HTTP servers on loopback: no page stalls the event loop, no bomb blows up memory,
and every broken reply ends in a named failure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import subprocess
import sys
import time

import pytest

from probe.checks import http
from probe.core import failures as F
from probe.core.context import Context
from tests.hostile.servers import TITLES_PAGE, hostile_app
from tests.loopback import Handler, Server, http_app
from tests.service.test_daemon import ROOT

RSS_GROWTH_BOUND_KB = 64 * 1024  # 13 bombs (8 at once) with a 1 MiB cap; before the fix: ~600 MB


@pytest.mark.parametrize(
    ("page", "title"),
    [
        (b"<html><head><title>Hello</title></head></html>", "Hello"),
        (b"<HTML><TITLE lang=ru>\n  \xd0\x94\xd0\xbe\xd1\x81\xd1\x82\xd1\x83\xd0\xbf  \n</Title>", "Доступ"),
        (b"<title>a</title><title>b</title>", "a"),
        (b"<title>never closed", None),
        (b"<title", None),
        (b"no title here", None),
        (b"x" * 70000 + b"<title>too far</title>", None),
        (b"<title>" + b"y" * 500 + b"</title>", "y" * 200),
    ],
)
def test_page_title(page: bytes, title: str | None) -> None:
    assert http.page_title(page) == title


async def slow_healthy_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(0.5)  # a slow but healthy site: its answer comes while the hostile page is parsed
    await http_app(reader, writer)


async def test_a_hostile_page_does_not_stall_a_healthy_target_in_the_same_run(ctx: Context) -> None:
    lags: list[float] = []

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - t0 - 0.05)

    ticker = asyncio.create_task(monitor())
    async with Server(hostile_app) as hostile, Server(slow_healthy_app) as healthy:
        bad, good = await asyncio.gather(
            http.fetch(f"http://127.0.0.1:{hostile.port}/titles", None, ctx, target="hostile"),
            http.fetch(f"http://127.0.0.1:{healthy.port}/", None, ctx, target="healthy"),
        )
    ticker.cancel()
    assert bad.ok and bad.details.title is None  # no </title> at all
    assert good.ok, good.failure
    assert good.details.title == "Hello"
    assert max(lags) < 2.0, max(lags)  # before: the regex held the loop ~5 s, and the healthy one timed out


def test_the_title_scan_of_the_hostile_page_is_fast() -> None:
    # Not a benchmark (bench/hostile.py prints the figure): a bound 100x above what it takes.
    t0 = time.perf_counter()
    http.page_title(TITLES_PAGE)
    assert time.perf_counter() - t0 < 0.5


def test_compression_bombs_are_capped_as_they_inflate() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.hostile.bomb_run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)
    zeros = hashlib.sha256(bytes(run["cap"])).hexdigest()
    assert len(run["rows"]) == 13
    for row in run["rows"]:
        assert row["failure"] is None and row["truncated"], row
        assert row["body_length"] == run["cap"] and row["sha256"] == zeros, row
    assert run["peak_kb"] - run["baseline_kb"] < RSS_GROWTH_BOUND_KB, run


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/bad-gzip", "http_response_decoding_error"),
        ("/codings", "http_response_decoding_error"),
        ("/bomb/empty-blocks", "http_response_decoding_error"),
        ("/http09", F.HTTP_PROTOCOL_ERROR),
        ("/garbage-status", F.HTTP_PROTOCOL_ERROR),
    ],
)
async def test_broken_replies_have_named_failures(ctx: Context, path: str, failure: str) -> None:
    async with Server(hostile_app) as server:
        result = await http.fetch(f"http://127.0.0.1:{server.port}{path}", None, ctx, target="t")
    assert result.failure == failure
    assert result.failed_operation == "http_round_trip"


async def close_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def test_a_silent_close_is_still_an_eof(ctx: Context) -> None:
    async with Server(close_app) as server:
        result = await http.fetch(f"http://127.0.0.1:{server.port}/", None, ctx, target="t")
    assert result.failure == F.EOF_ERROR


@pytest.mark.parametrize(("app", "path", "failure"), [
    (close_app, "/", F.EOF_ERROR),  # the TLS handshake's bytes are not an HTTP reply
    (hostile_app, "/http09", F.HTTP_PROTOCOL_ERROR),
    (hostile_app, "/bomb/gzip-gzip", None),
])
async def test_over_tls_too(ctx: Context, good_tls: ssl.SSLContext, app: Handler, path: str,
                            failure: str | None) -> None:
    async with Server(app, good_tls) as server:
        result = await http.fetch(f"https://good.test:{server.port}{path}", "127.0.0.1", ctx, target="t")
    assert result.failure == failure
    if failure is None:
        assert result.details.body_truncated and result.details.body_length == ctx.settings.http_max_body


def test_the_diagnostics_page_parser_is_linear_too() -> None:
    # probe/diagnostics/localise.py ran the same backtracking title regex after every read.
    from probe.diagnostics.localise import response_outcome
    from tests.loopback import BLOCKPAGE

    t0 = time.perf_counter()
    assert response_outcome(b"HTTP/1.1 200 OK\r\n\r\n" + TITLES_PAGE, "http") == "response"
    assert time.perf_counter() - t0 < 0.5
    assert response_outcome(b"HTTP/1.1 200 OK\r\n\r\n" + BLOCKPAGE.encode(), "http") == "blockpage"
