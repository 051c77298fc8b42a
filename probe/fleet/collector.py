"""The collector: an HTTP API (Starlette on uvicorn) in front of the central store.

Stateless: every request authenticates against PostgreSQL, so several collector processes can
serve one database; the only per-process state is the rate limiter and the metrics.

Endpoints
- ``POST /v1/enrol`` ``{"token": ..., "probe_id": optional}`` -> ``{"probe_id", "credential"}``
- ``POST /v1/measurements`` (``Authorization: Bearer <credential>``; body JSONL or a JSON array,
  ``Content-Encoding: gzip|zstd|identity``) -> ``{"accepted": n, "duplicates": d}``
- ``GET /metrics`` (Prometheus), ``GET /healthz`` (process up), ``GET /readyz`` (database reachable)
- ``GET /api/v1/events?cc=&asn=&service=&ongoing=1`` -> ``{"events": [...]}``: fleet events
  (:mod:`probe.fleet.events`; counts and shares, no probe ids), found by a job that one collector
  at a time runs every ``events_every_s`` seconds

A batch is all or nothing: a measurement of another probe -> 403, an invalid one -> 400 naming the
index and reason of every bad measurement, and in both cases nothing of the batch is stored.

Volunteers' addresses: the app never reads the client address (``request.client``), uvicorn's
access log is off and X-Forwarded-For is not trusted (``proxy_headers=False``); nothing stored or
logged holds an address. tests/fleet/test_collector.py scans the database and the logs for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import io
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import prometheus_client as prom
import psycopg
import psycopg_pool
import zstandard
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from probe.core.records import parse_time
from probe.fleet import central, contract
from probe.fleet import events as fleet_events

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_RESULTS = ("accepted", "bad_request", "forbidden", "unauthorized", "too_large",
                 "rate_limited", "unavailable")

#: Upload lag buckets: a probe uploading every minute lands in the first ones; a backlog after a probe's
#: (or the collector's) outage in the hours and days ones, up to the contract's 30-day window.
UPLOAD_LAG_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                      2 * 86400, 7 * 86400, 30 * 86400)


@dataclass(frozen=True)
class Settings:
    dsn: str
    max_body_bytes: int = 8 << 20           # compressed request body
    max_batch_bytes: int = 64 << 20         # after decompression (a zip bomb stops here)
    max_batch_measurements: int = 10_000
    max_age_days: int = 30                  # oldest measurement accepted (retention window)
    rate_per_s: float = 5.0                 # batches per second per probe (token bucket)
    rate_burst: float = 20.0
    retry_after_s: int = 5                  # on 503; the client adds its own jitter
    pool_min: int = 1
    pool_max: int = 8
    pool_timeout_s: float = 5.0
    helper_concurrency: int = 16            # test-helper requests at once (0: no helper); more get 503
    helper_timeout_s: float = 3.0           # per step of a helper check
    events_every_s: float = 60.0            # the fleet events job (0: off)
    events_keep_s: float = 7 * 86400.0      # an ended fleet event stays on /metrics this long (time lines)


class Metrics:
    """The collector's own metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.ingested = prom.Counter("probe_collector_measurements_ingested", "Measurements stored (new)", registry=r)
        self.duplicates = prom.Counter("probe_collector_measurements_duplicate",
                                       "Measurements received again and not stored twice", registry=r)
        self.batches = prom.Counter("probe_collector_batches", "Batches by result", ["result"], registry=r)
        self.rejects = prom.Counter("probe_collector_rejects", "Measurements refused, by reason", ["reason"],
                                    registry=r)
        self.db_seconds = prom.Histogram("probe_collector_db_seconds", "Database time per operation", ["op"],
                                         registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                                              2.5, 5, 10))
        self.in_flight = prom.Gauge("probe_collector_in_flight_requests", "Requests being served", registry=r)
        self.enrolments = prom.Counter("probe_collector_enrolments", "Probes enrolled", registry=r)
        self.upload_lag = prom.Histogram("probe_collector_upload_lag_seconds",
                                         "Time from a measurement's start to its storing here (new ones only)",
                                         registry=r, buckets=UPLOAD_LAG_BUCKETS)
        event_labels = ["service", "cc", "asn", "type", "id"]
        self.event_active = prom.Gauge("probe_fleet_event_active",
                                       "1 per ongoing fleet event, 0 once ended (asn=\"\": country-wide)",
                                       event_labels, registry=r)
        self.event_share = prom.Gauge("probe_fleet_event_share", "Share of the network's reporting probes that see it",
                                      event_labels, registry=r)
        self.event_probes = prom.Gauge("probe_fleet_event_probes", "Probes that see the fleet event", event_labels,
                                       registry=r)
        self.event_start = prom.Gauge("probe_fleet_event_start_timestamp_seconds",
                                      "Estimated start of the fleet event (midpoint of its bounds)", event_labels,
                                      registry=r)
        self.event_end = prom.Gauge("probe_fleet_event_end_timestamp_seconds",
                                    "Estimated end of an ended fleet event (midpoint of its bounds)", event_labels,
                                    registry=r)
        self.event_runs = prom.Counter("probe_fleet_events_runs", "Runs of the fleet events job, by result",
                                       ["result"], registry=r)
        self.event_read = prom.Counter("probe_fleet_events_measurements_read",
                                       "Measurements read by the fleet events job (in this process)", registry=r)
        self.event_late = prom.Gauge("probe_fleet_events_late_measurements",
                                     "Measurements the job's detector dropped as too late (since it took the lock)",
                                     registry=r)
        for result in ("detected", "standby", "error"):
            self.event_runs.labels(result)
        for result in BATCH_RESULTS:
            self.batches.labels(result)
        for reason in contract.REASONS:
            self.rejects.labels(reason)


@dataclass
class RateLimiter:
    """A token bucket per probe id, in this process (N collectors allow N times the rate)."""

    rate: float
    burst: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def retry_after(self, key: str, now: float) -> float:
        """0 if the request may go now (and takes a token), else the seconds to wait."""
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class HTTPError(Exception):
    def __init__(self, status: int, result: str, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(result)
        self.status, self.result, self.body, self.headers = status, result, body, headers or {}


class Collector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.pool = psycopg_pool.AsyncConnectionPool(
            settings.dsn, min_size=settings.pool_min, max_size=settings.pool_max, open=False,
            timeout=settings.pool_timeout_s, kwargs={"autocommit": True}, check=None,
        )
        self.known_days: set[dt.date] = set()

    # -- plumbing -------------------------------------------------------------------------------

    async def _db(self, op: str, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            async with self.pool.connection() as conn:
                return await work(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("database unavailable (%s): %s", op, type(exc).__name__)
            raise HTTPError(503, "unavailable", {"error": "database unavailable"},
                            {"Retry-After": str(self.settings.retry_after_s)}) from None
        finally:
            self.metrics.db_seconds.labels(op).observe(time.perf_counter() - start)

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, "too_large", {"error": f"body larger than {limit} bytes"})
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "too_large", {"error": f"body larger than {limit} bytes"})
            chunks.append(chunk)
        return b"".join(chunks)

    def _decompress(self, data: bytes, encoding: str) -> bytes:
        limit = self.settings.max_batch_bytes
        try:
            if encoding in ("", "identity"):
                out = data
            elif encoding == "gzip":
                out = zlib.decompressobj(wbits=31).decompress(data, limit + 1)
            elif encoding == "zstd":
                out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(limit + 1)
            else:
                raise HTTPError(415, "bad_request", {"error": f"unsupported Content-Encoding {encoding!r}"})
        except (zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as exc:
            raise HTTPError(400, "bad_request", {"error": f"cannot decompress: {exc}"}) from None
        if len(out) > limit:
            raise HTTPError(413, "too_large", {"error": f"batch larger than {limit} bytes uncompressed"})
        return out

    def _parse(self, text: bytes) -> tuple[list[Any], list[str] | None]:
        """The items of a JSON array, or of JSON lines (with each line's text, kept as the body)."""
        stripped = text.strip()
        try:
            if stripped.startswith(b"["):
                items = json.loads(stripped)
                if not isinstance(items, list):
                    raise ValueError("not a list")
                return items, None
            lines = [line for line in stripped.decode().splitlines() if line.strip()]
            return [json.loads(line) for line in lines], lines
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, "bad_request", {"error": f"not JSON lines nor a JSON array: {exc}"}) from None

    async def _authenticate(self, request: Request) -> str:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise HTTPError(401, "unauthorized", {"error": "missing bearer credential"},
                            {"WWW-Authenticate": "Bearer"})
        digest = central.secret_hash(credential.strip())

        async def lookup(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(central.AUTHENTICATE, (digest,))).fetchone()

        found = await self._db("authenticate", lookup)
        if found is None:
            raise HTTPError(401, "unauthorized", {"error": "unknown or revoked credential"},
                            {"WWW-Authenticate": "Bearer"})
        return str(found[0])

    # -- endpoints ------------------------------------------------------------------------------

    async def measurements(self, request: Request) -> dict[str, Any]:
        probe_id = await self._authenticate(request)
        wait = self.limiter.retry_after(probe_id, time.monotonic())
        if wait > 0:
            raise HTTPError(429, "rate_limited", {"error": "too many batches"},
                            {"Retry-After": str(max(1, math.ceil(wait)))})
        raw = self._decompress(await self._body(request), request.headers.get("content-encoding", "").strip().lower())
        items, lines = self._parse(raw)
        if len(items) > self.settings.max_batch_measurements:
            raise HTTPError(413, "too_large", {"error": f"more than {self.settings.max_batch_measurements} "
                                                        "measurements in one batch"})
        foreign = [i for i, item in enumerate(items)
                   if isinstance(item, dict) and contract.probe_id_of(item) not in (None, probe_id)]
        if foreign:
            raise HTTPError(403, "forbidden", {"error": "measurements of another probe id", "indexes": foreign})
        batch, errors = self._validate(items, lines)
        if errors:
            for error in errors:
                self.metrics.rejects.labels(error["reason"]).inc()
            raise HTTPError(400, "bad_request", {"error": "invalid measurements; nothing stored",
                                                 "errors": errors})
        try:
            new = await self._store(batch)
        except psycopg.errors.CheckViolation:  # no partition for a day: retention dropped one we knew
            self.known_days.clear()
            new = await self._store(batch)
        self._observe_lag(new, time.time())
        accepted = len(new)
        self.metrics.ingested.inc(accepted)
        self.metrics.duplicates.inc(len(batch) - accepted)
        return {"accepted": accepted, "duplicates": len(batch) - accepted}

    async def _store(self, batch: list[contract.Measurement]) -> list[contract.Measurement]:
        missing = {m.day for m in batch} - self.known_days
        if missing:
            await self._db("partitions", lambda conn: central.ensure_partitions_async(conn, missing))
            self.known_days |= missing
        return await self._db("ingest", lambda conn: central.ingest(conn, batch)) if batch else []

    def _observe_lag(self, stored: list[contract.Measurement], now: float) -> None:
        """Upload lag of what was stored now: a duplicate (a retry) is not counted twice; a probe
        clock ahead of ours counts as no lag."""
        for m in stored:
            self.metrics.upload_lag.observe(max(0.0, now - m.start_time.timestamp()))

    def _validate(self, items: list[Any], lines: list[str] | None
                  ) -> tuple[list[contract.Measurement], list[dict[str, Any]]]:
        today = dt.datetime.now(dt.UTC).date()
        batch, errors, seen = [], [], set()
        for index, item in enumerate(items):
            try:
                m = contract.validate(item, today=today, max_age_days=self.settings.max_age_days,
                                      raw=lines[index] if lines is not None else None)
                if m.uid in seen:
                    raise contract.Invalid("duplicate_in_batch", "measurement_uid appears twice in this batch")
            except contract.Invalid as exc:
                errors.append({"index": index, "reason": exc.reason, "detail": exc.detail})
                continue
            seen.add(m.uid)
            batch.append(m)
        return batch, errors

    async def enrol(self, request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await self._body(request))
            token, wanted = data["token"], data.get("probe_id")
            if not isinstance(token, str) or not (wanted is None or isinstance(wanted, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise HTTPError(400, "bad_request", {"error": 'expected {"token": "...", "probe_id": optional}'}) from None
        probe_id = wanted or f"probe-{central.new_secret()[:16]}"
        if not contract.valid_probe_id(probe_id):
            raise HTTPError(400, "bad_request", {"error": "probe_id must be letters, digits and ._:-"})
        credential = central.new_secret()

        async def work(conn: psycopg.AsyncConnection[Any]) -> int | None:
            async with conn.transaction():
                found = await (await conn.execute(central.TOKEN_ID, (central.secret_hash(token),))).fetchone()
                if found is None:
                    return None
                cur = await conn.execute(central.ENROL, (probe_id, found[0], central.secret_hash(credential)))
                return cur.rowcount

        done = await self._db("enrol", work)
        if done is None:
            raise HTTPError(401, "unauthorized", {"error": "unknown or revoked enrolment token"})
        if done == 0:
            raise HTTPError(409, "bad_request", {"error": f"probe id {probe_id!r} is already enrolled"})
        self.metrics.enrolments.inc()
        return {"probe_id": probe_id, "credential": credential}

    async def events(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        limit = q.get("limit", "1000")
        if not limit.isdigit():
            raise HTTPError(400, "bad_request", {"error": "limit must be a positive integer"})

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            return await fleet_events.list_events_async(
                conn, cc=q.get("cc"), asn=q.get("asn"), service=q.get("service"),
                ongoing=q.get("ongoing", "") in ("1", "true"), limit=int(limit))

        return {"events": await self._db("events", work)}

    async def refresh_event_metrics(self) -> None:
        """The fleet events, ongoing and ended within ``events_keep_s``, as gauges: every collector
        exports the same, so alerts and panels take the max. The ended ones keep the dashboards'
        time line drawn from start to end; their ``id`` label tells two episodes of one blocking apart."""
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.events_keep_s)
        found = await self._db("events", lambda conn: fleet_events.list_events_async(conn, ended_since=since,
                                                                                     limit=10_000))
        m = self.metrics
        for gauge in (m.event_active, m.event_share, m.event_probes, m.event_start, m.event_end):
            gauge.clear()
        for e in found:
            labels = (e["service"], e["cc"], e["asn"], e["type"], e["id"])
            m.event_active.labels(*labels).set(1 if e["ongoing"] else 0)
            m.event_share.labels(*labels).set(e["share"])
            m.event_probes.labels(*labels).set(e["probes"])
            m.event_start.labels(*labels).set(parse_time(e["start_time"]))
            if not e["ongoing"]:
                m.event_end.labels(*labels).set(parse_time(e["end_time"]))

    async def run_events(self, job: fleet_events.EventJob) -> None:
        """The periodic job: detect (if this collector holds the lock), then refresh the metrics."""
        while True:
            try:
                read, _ = await asyncio.to_thread(job.run_once)
                self.metrics.event_runs.labels("detected" if job.holder else "standby").inc()
                self.metrics.event_read.inc(read)
                self.metrics.event_late.set(job.late)
                await self.refresh_event_metrics()
            except (psycopg.Error, HTTPError) as exc:
                self.metrics.event_runs.labels("error").inc()
                log.warning("fleet events job: %s", type(exc).__name__)
            except Exception:
                # Any other failure is a defect, but it must not end the job for the collector's
                # lifetime (the task's error surfaced only at shutdown): count it, say it, go on.
                self.metrics.event_runs.labels("error").inc()
                log.exception("fleet events job failed; trying again in %s s", self.settings.events_every_s)
            await asyncio.sleep(self.settings.events_every_s)

    async def ready(self, request: Request) -> dict[str, Any]:
        await self._db("ping", lambda conn: conn.execute("SELECT 1"))
        return {"ready": True}


def _endpoint(collector: Collector, handler: Callable[[Request], Awaitable[dict[str, Any]]],
              counted: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        collector.metrics.in_flight.inc()
        try:
            body = await handler(request)
            result, response = "accepted", JSONResponse(body)
        except HTTPError as exc:
            result, response = exc.result, JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)
        finally:
            collector.metrics.in_flight.dec()
        if counted:
            collector.metrics.batches.labels(result).inc()
        return response
    return endpoint


#: The largest test-helper request body (a /check or /fetch is a few hundred bytes).
HELPER_MAX_BODY = 8192


def _helper_endpoint(settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    """The test helper (probe/service/helper.py) under ``/helper/``: the fleet's control vantage.

    Its own limits: at most ``helper_concurrency`` requests at once (503 with Retry-After beyond),
    bodies of at most :data:`HELPER_MAX_BODY`, and the helper's own bounds (timeouts, redirects,
    body sizes, no bogon addresses). ``/helper/whoami`` answers the client its own address, as
    the helper does (the probe scrubs it from its records); it is neither logged nor stored.
    """
    from probe.service.helper import handle
    from probe.service.httpd import Request as HelperRequest

    helper = handle(timeout=settings.helper_timeout_s)
    slots = asyncio.Semaphore(max(1, settings.helper_concurrency))

    async def endpoint(request: Request) -> Response:
        if slots.locked():
            return JSONResponse({"error": "the test helper is busy"}, status_code=503, headers={"Retry-After": "5"})
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > HELPER_MAX_BODY:
                return JSONResponse({"error": "request too large"}, status_code=413)
        peer = request.client.host if request.client else None
        async with slots:
            answer = await helper(HelperRequest(request.method, "/" + request.path_params["name"], {}, body,
                                                peer=peer))
        content = answer.body if isinstance(answer.body, bytes) else b"".join([c async for c in answer.body])
        return Response(content, status_code=answer.status, headers=answer.headers)

    return endpoint


def make_app(settings: Settings) -> Starlette:
    collector = Collector(settings)

    async def metrics(request: Request) -> Response:
        return Response(prom.generate_latest(collector.metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.pool.open(wait=False)
        job = fleet_events.EventJob(settings.dsn, fleet_events.JobSettings(every_s=settings.events_every_s))
        task = asyncio.create_task(collector.run_events(job)) if settings.events_every_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(job.close)
            await collector.pool.close()

    app = Starlette(routes=[
        Route("/v1/measurements", _endpoint(collector, collector.measurements, True), methods=["POST"]),
        Route("/v1/enrol", _endpoint(collector, collector.enrol, False), methods=["POST"]),
        Route("/readyz", _endpoint(collector, collector.ready, False), methods=["GET"]),
        Route("/api/v1/events", _endpoint(collector, collector.events, False), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *([Route("/helper/{name}", _helper_endpoint(settings), methods=["GET", "POST"])]
          if settings.helper_concurrency > 0 else []),
    ], lifespan=lifespan)
    app.state.collector = collector
    return app


def serve(settings: Settings, host: str, port: int, *, tls_cert: str | None = None,
          tls_key: str | None = None) -> None:
    """Run the collector until interrupted (uvicorn: access log off, proxy headers not trusted)."""
    import uvicorn

    config = uvicorn.Config(
        make_app(settings), host=host, port=port, access_log=False, proxy_headers=False,
        server_header=False, date_header=True, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
        log_level="info", lifespan="on",
    )
    asyncio.run(uvicorn.Server(config).serve())

