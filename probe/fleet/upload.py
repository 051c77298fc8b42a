"""The probe side of the fleet: send pending measurements to a collector, never lose or repeat one.

The uploader reads a batch from a :class:`Source` (the upload cursor over the local store),
compresses it (zstd), POSTs it, and marks it uploaded only after the collector acknowledged it
(``accepted`` + ``duplicates`` = the batch). Anything else leaves the batch pending:

- connection errors and 5xx: the next collector URL in order (a mirror, a fronted URL), and once
  all have failed, exponential backoff with full jitter;
- 429 and 503: wait ``Retry-After`` (capped), plus jitter, so that a fleet coming back after an
  outage does not stampede;
- 400: the measurements the collector named are marked rejected (kept locally, never resent), the
  rest are sent again;
- 401/403: the credential is refused (revoked token, wrong probe id): stop, and say so.

Everything that waits goes through an injectable ``sleep``, so tests run the policy in no time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import zstandard

from probe.service.metrics import UPLOAD_ERRORS

#: Reasons an upload failed (the ``reason`` label of ``probe_upload_errors_total``).
ERRORS = UPLOAD_ERRORS


class Source(Protocol):
    """The upload cursor: pending measurements, and where to record what became of them."""

    def pending(self, limit: int) -> Sequence[tuple[Hashable, Mapping[str, Any]]]:
        """Up to ``limit`` (key, measurement) not uploaded nor rejected yet, oldest first."""
        ...

    def mark_uploaded(self, keys: Sequence[Hashable]) -> None: ...

    def mark_rejected(self, keys: Sequence[Hashable], reasons: Sequence[str]) -> None: ...


class UploadRefused(Exception):
    """The collector refuses this probe (401/403): retrying will not help."""


@dataclass
class Policy:
    batch_size: int = 500
    timeout_s: float = 30.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0    # connection errors: resume within a minute of the network's return
    retry_after_max_s: float = 900.0
    deadline_s: float = 3600.0     # give up for this round (the queue stays pending)


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    attempts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_reason: str | None = None   # the reason (one of ERRORS) of last_error
    last_success: float | None = None
    complete: bool = False

    def error(self, reason: str, text: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = text
        self.last_reason = reason


def encode(measurements: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON lines, zstd-compressed."""
    lines = b"".join(json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                     for m in measurements)
    return zstandard.ZstdCompressor(level=3).compress(lines)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else None


class Uploader:
    def __init__(
        self,
        urls: Sequence[str],
        credential: str,
        *,
        policy: Policy | None = None,
        proxy: str | None = None,
        verify: Any = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one collector URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.credential = credential
        self.policy = policy or Policy()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        self.client = httpx.AsyncClient(
            proxy=proxy, verify=verify, transport=transport, timeout=self.policy.timeout_s,
            headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/x-ndjson",
                     "Content-Encoding": "zstd"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Uploader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** max(0, failures - 1))
        return self.rng.uniform(0, ceiling)

    async def run(self, source: Source, report: Report | None = None) -> Report:
        """Upload until the source has nothing pending (``complete``) or the deadline passes."""
        report = report or Report()
        end = self.clock() + self.policy.deadline_s
        while self.clock() < end:
            batch = source.pending(self.policy.batch_size)
            if not batch:
                report.complete = True
                return report
            await self._send(source, batch, report, end)
        return report

    async def _send(self, source: Source, batch: Sequence[tuple[Hashable, Mapping[str, Any]]],
                    report: Report, end: float) -> None:
        """Send one batch until it is acknowledged (or partly rejected), or the deadline passes."""
        body = encode(m for _, m in batch)
        failures = 0
        while self.clock() < end:
            wait: float | None = None
            for url in self.urls:
                report.attempts += 1
                try:
                    response = await self.client.post(f"{url}/v1/measurements", content=body)
                except httpx.TimeoutException as exc:
                    report.error("timeout", f"{url}: timed out ({type(exc).__name__})")
                    continue
                except httpx.TransportError as exc:
                    report.error("unreachable", f"{url}: cannot connect ({type(exc).__name__})")
                    continue
                status = response.status_code
                if status == 200:
                    self._acknowledged(source, batch, response, report)
                    return
                if status == 400 and self._rejected(source, batch, response, report):
                    return
                if status in (401, 403):
                    reason = "unauthorized" if status == 401 else "forbidden"
                    report.error(reason, f"{url}: {status} {response.text[:200]}")
                    raise UploadRefused(report.last_error)
                if status in (429, 503):
                    reason = "rate_limited" if status == 429 else "unavailable"
                    report.error(reason, f"{url}: {status}, retry after {response.headers.get('retry-after')}")
                    hint = retry_after(response)
                    if hint is not None:
                        wait = min(self.policy.retry_after_max_s, hint)
                        break  # the collector answered: waiting beats hammering a mirror
                    continue
                report.error("server_error" if status >= 500 else "protocol", f"{url}: HTTP {status}")
            failures += 1
            delay = wait + self.rng.uniform(0, max(1.0, wait) * 0.5) if wait is not None else self._backoff(failures)
            await self.sleep(max(0.0, min(delay, end - self.clock())))

    def _acknowledged(self, source: Source, batch: Sequence[tuple[Hashable, Mapping[str, Any]]],
                      response: httpx.Response, report: Report) -> None:
        data = response.json()
        accepted, duplicates = int(data["accepted"]), int(data["duplicates"])
        if accepted + duplicates != len(batch):
            raise RuntimeError(f"collector acknowledged {accepted}+{duplicates} of {len(batch)}")
        source.mark_uploaded([key for key, _ in batch])
        report.sent += len(batch)
        report.accepted += accepted
        report.duplicates += duplicates
        report.last_success = time.time()

    def _rejected(self, source: Source, batch: Sequence[tuple[Hashable, Mapping[str, Any]]],
                  response: httpx.Response, report: Report) -> bool:
        """Mark the measurements a 400 names as rejected; False if the 400 names none."""
        try:
            errors = response.json().get("errors") or []
            named = {int(e["index"]): str(e["reason"]) for e in errors}
        except (ValueError, KeyError, TypeError, AttributeError):
            named = {}
        named = {i: r for i, r in named.items() if 0 <= i < len(batch)}
        if not named:
            report.error("protocol", f"400 without measurement errors: {response.text[:200]}")
            return False
        source.mark_rejected([batch[i][0] for i in sorted(named)], [named[i] for i in sorted(named)])
        report.rejected += len(named)
        report.error("rejected", f"{len(named)} measurements rejected: {sorted(set(named.values()))}")
        return True


class JsonlSource:
    """A :class:`Source` over a JSON-lines file of measurements: ``probe upload --from FILE``.

    What has been acknowledged is appended (and fsynced) to ``FILE.uploaded`` as one uid a line,
    rejections to ``FILE.rejected``; a crash between sending and recording means the batch is sent
    again, which the collector counts as duplicates.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done_path = path.with_name(path.name + ".uploaded")
        self.rejected_path = path.with_name(path.name + ".rejected")
        self.done = self._read(self.done_path) | self._read(self.rejected_path)

    @staticmethod
    def _read(path: Path) -> set[str]:
        if not path.exists():
            return set()
        return {line.split("\t", 1)[0] for line in path.read_text().splitlines() if line}

    def pending(self, limit: int) -> list[tuple[Hashable, Mapping[str, Any]]]:
        out: list[tuple[Hashable, Mapping[str, Any]]] = []
        with self.path.open() as f:
            for line in f:
                if not line.strip():
                    continue
                m = json.loads(line)
                key = str(m.get("measurement_uid"))
                if key not in self.done:
                    out.append((key, m))
                    if len(out) >= limit:
                        break
        return out

    def _append(self, path: Path, lines: Iterable[str]) -> None:
        import os

        with path.open("a") as f:
            f.writelines(line + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())

    def mark_uploaded(self, keys: Sequence[Hashable]) -> None:
        self._append(self.done_path, map(str, keys))
        self.done.update(map(str, keys))

    def mark_rejected(self, keys: Sequence[Hashable], reasons: Sequence[str]) -> None:
        self._append(self.rejected_path, (f"{k}\t{r}" for k, r in zip(keys, reasons, strict=True)))
        self.done.update(map(str, keys))
