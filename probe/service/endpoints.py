"""The daemon's HTTP endpoints, served on the daemon's own event loop.

=================  ===========================================================================
``/metrics``       the continuous results and the daemon's health (Prometheus text format)
``/probe?target=``  one run of the named target now, blackbox_exporter style (docs/metrics.md)
``/-/healthy``     200 while the process serves (also ``/-/ready``)
``/``              the status page for people (probe.service.status): services, events, plots, health
=================  ===========================================================================

Why on the loop, not in threads: a Prometheus with hundreds of ``/probe`` targets sends their
requests at once. Each one is a measurement on the loop anyway; a thread per request only added a
thread start, a cross-thread wake-up and GIL hand-offs to every check (py-spy: 45% of the
process's GIL time was the HTTP threads). A burst waits its turn for one of
:data:`PROBE_CONCURRENCY` slots instead of being refused; beyond :data:`PROBE_QUEUE` requests in
the house a request gets 503 with ``Retry-After``. ``/metrics`` renders in a worker thread so
that a large exposition never stalls the measurements' timers.

The socket is bound when :class:`Endpoints` is built, before anything is measured, so a busy
port is an error at start (``probe daemon`` exits 1).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from probe.core import failures
from probe.service import status
from probe.service.httpd import Request, Response, connection_handler
from probe.service.metrics import registry_for, render
from probe.storage.store import StoreError

if TYPE_CHECKING:
    from probe.service.daemon import Daemon

T = TypeVar("T")

PROBE_CONCURRENCY = 64  # on-demand measurements at once; more requests wait their turn
PROBE_QUEUE = 1024  # requests measuring or waiting; beyond it 503 with Retry-After (also the listen backlog)
PROBE_SCRAPE_MARGIN = 0.5  # seconds kept from Prometheus' scrape timeout for the answer, as blackbox does
RETRY_AFTER = "5"

STATUS_WINDOW = 86400.0  # the status page shows the last day
STATUS_REFRESH = 60  # seconds; the page reloads itself without JavaScript
STATUS_CACHE = 5.0  # seconds a rendered page is served again (several viewers, reloads: one render)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def scrape_timeout(headers: dict[str, str]) -> float | None:
    """Prometheus' ``X-Prometheus-Scrape-Timeout-Seconds``, when it is a sane number."""
    try:
        seconds = float(headers.get("x-prometheus-scrape-timeout-seconds", ""))
    except ValueError:
        return None
    return seconds if 0 < seconds < 3600 else None


def _text(status: int, body: str, **headers: str) -> Response:
    return Response(status, body.encode(), {"Content-Type": "text/plain; charset=utf-8", **headers})


class Endpoints:
    """The listening socket and the request handler of one daemon."""

    def __init__(self, daemon: Daemon, listen: str) -> None:
        host, port = parse_listen(listen)
        self.daemon = daemon
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(PROBE_QUEUE)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self._registry = registry_for(daemon.state)
        self._waiting = 0  # /probe requests measuring or waiting for a slot
        self._slots: asyncio.Semaphore | None = None
        self._page: tuple[float, str] | None = None  # (monotonic time, the rendered status page)

    async def serve(self, main: Awaitable[T]) -> T:
        """Serve on the running loop while ``main`` (the daemon's run) runs; return its result."""
        self._slots = asyncio.Semaphore(PROBE_CONCURRENCY)
        server = await asyncio.start_server(connection_handler(self.handle), sock=self.sock)
        try:
            return await main
        finally:
            server.close()

    def close(self) -> None:
        self.sock.close()

    async def handle(self, request: Request) -> Response:
        url = urlsplit(request.path)
        if url.path == "/metrics":
            body = await asyncio.to_thread(render, self.daemon.state, registry=self._registry)
            return Response(200, body, {"Content-Type": CONTENT_TYPE_LATEST})
        if url.path == "/probe":
            return await self._probe((parse_qs(url.query).get("target") or [""])[0], request.headers)
        if url.path in ("/-/healthy", "/-/ready"):
            return _text(200, "OK\n")
        if url.path == "/":
            if self._page is None or time.monotonic() - self._page[0] > STATUS_CACHE:
                self._page = (time.monotonic(), await asyncio.to_thread(self.status_page))
            page = self._page[1]
            return Response(200, page.encode(), {
                "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": status.CSP,
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
        return _text(404, "not found\n")

    def status_page(self) -> str:
        """The status page: the store's last day (nothing without a store), the daemon's own health."""
        now = time.time()
        meta = self.daemon.ctx.meta
        facts = [("country", meta.probe_cc), ("network", meta.probe_asn)]
        with self.daemon.state.lock:
            started = self.daemon.state.health.start_time
            errors = sum(self.daemon.state.health.store_write_errors.values())
        path = getattr(self.daemon.store, "path", None)
        title = "probe: what this probe sees"
        try:
            if path is None:
                raise StoreError("no store (the daemon runs with --no-store)")
            view = status.view_from_store(path, since=now - STATUS_WINDOW, now=now, probe=facts, started=started,
                                          store_errors=errors)
        except StoreError as exc:
            title = f"probe: {failures.scrub(str(exc))}"
            view = status.build_view([], [], [], status.Health(None, status.upload_status(), None, started=started),
                                     now=now, since=now - STATUS_WINDOW, probe=facts, title=title)
        return status.render_html(view, refresh=STATUS_REFRESH)

    async def _probe(self, name: str, headers: dict[str, str]) -> Response:
        if self._waiting >= PROBE_QUEUE:
            return _text(503, f"more than {PROBE_QUEUE} /probe requests at once\n", **{"Retry-After": RETRY_AFTER})
        deadline = scrape_timeout(headers)
        limit = None if deadline is None else max(0.1, deadline - PROBE_SCRAPE_MARGIN)
        assert self._slots is not None
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with asyncio.timeout(limit):
                    await self._slots.acquire()
            except TimeoutError:
                body = await self.daemon.probe_target(name, limit=0)  # out of time in the queue: success 0
                return Response(200, body, {"Content-Type": CONTENT_TYPE_LATEST})
            try:
                left = None if limit is None else max(0.0, limit - (loop.time() - start))
                body = await self.daemon.probe_target(name, limit=left)
            finally:
                self._slots.release()
        except KeyError:
            return _text(400, f"unknown target {name!r}\n")
        finally:
            self._waiting -= 1
        return Response(200, body, {"Content-Type": CONTENT_TYPE_LATEST})
