"""The local store as the upload queue: whole target runs behind a cursor, as OONI measurements.

:class:`StoreSource` is the :class:`probe.fleet.upload.Source` over the store
(:meth:`probe.storage.store.Store.runs_after`). Each pending target run becomes one OONI
measurement by the same conversion as ``probe export --format jsonl``
(:func:`probe.analysis.ooni.measurement`); its key is the ``seq`` of the run's last record.
The cursor (``meta['upload_seq']``) moves only in :meth:`StoreSource.mark_uploaded`, which the
uploader calls after the collector's acknowledgement: a crash before it means the batch is
sent again, and the collector counts it as duplicates. Runs the collector rejected (400) are
remembered (``meta['upload_rejected:SEQ']``), kept locally and never sent again.

:func:`upload_round` is one round (``probe upload``, and the daemon's upload task every
``upload.interval``): it runs in a thread of its own with its own event loop, so the daemon's
loop never waits on the store or the network. What it found is kept in ``meta['upload_status']``
(:class:`Status`), which ``probe status``, the status page and the metrics read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from probe.analysis.ooni import measurement
from probe.core import ooni
from probe.core.config import Upload
from probe.fleet.enrol import EnrolError, Enrolment, config_path, load, tls_verify
from probe.fleet.upload import Policy, Report, Uploader, UploadRefused
from probe.service.metrics import Health, MetricsState
from probe.service.status import UPLOAD_WORDS as WORDS
from probe.storage.store import Store, StoreError

log = logging.getLogger("probe.service.daemon")
#: The longest wait between two failed rounds of the daemon's uploader (seconds).
MAX_WAIT = 600.0

STATUS_KEY = "upload_status"
_REJECTED = "upload_rejected:"



@dataclass
class Status:
    """The uploader's state as kept in the store (``meta['upload_status']``)."""

    last_attempt: float | None = None
    last_success: float | None = None
    last_reason: str | None = None     # one of upload.ERRORS, None after a clean round
    last_error: str | None = None      # the technical detail (URL, status)
    errors: dict[str, int] = field(default_factory=dict)   # reason -> count, since the store began
    uploaded: int = 0                  # measurements acknowledged, since the store began

    @classmethod
    def load(cls, store: Store) -> Status:
        text = store.meta(STATUS_KEY)
        if not text:
            return cls()
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def words(self) -> str | None:
        """The last error in plain words, or None."""
        return None if self.last_reason is None else WORDS.get(self.last_reason, self.last_reason)


class StoreSource:
    """Pending target runs of ``store`` as OONI measurements; see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rejected = {int(k[len(_REJECTED):]) for k in self._rejected_keys()}
        self.skipped = 0   # runs without a verdict (interrupted): nothing to upload

    def _rejected_keys(self) -> list[str]:
        rows = self.store.db.execute("SELECT key FROM meta WHERE key LIKE ?", (_REJECTED + "%",)).fetchall()
        return [str(r[0]) for r in rows]

    def pending(self, limit: int) -> list[tuple[Hashable, Mapping[str, Any]]]:
        while True:
            cursor = self.store.upload_cursor()
            runs = self.store.runs_after(cursor, limit)
            out: list[tuple[Hashable, Mapping[str, Any]]] = []
            passed = cursor  # runs at the head with nothing to send: the cursor passes them
            for last, records in runs:
                if not records or last in self.rejected:
                    if not out:
                        passed = last
                        self.skipped += not records
                    continue
                out.append((last, json.loads(ooni.encode(measurement(records)))))
            if passed != cursor:
                self.store.set_meta({"upload_seq": str(passed)})
            if out or not runs:
                return out

    def mark_uploaded(self, keys: Sequence[Hashable]) -> None:
        last = max(int(k) for k in keys)  # type: ignore[call-overload]
        if last > self.store.upload_cursor():
            self.store.set_meta({"upload_seq": str(last)})

    def mark_rejected(self, keys: Sequence[Hashable], reasons: Sequence[str]) -> None:
        self.store.set_meta({f"{_REJECTED}{k}": r for k, r in zip(keys, reasons, strict=True)})
        self.rejected.update(int(k) for k in keys)  # type: ignore[call-overload]


@dataclass
class Round:
    """What one upload round did (the report) and whether the collector refused the probe."""

    report: Report
    refused: bool
    pending: int
    status: Status
    expired: int = 0   # measurements deleted at the queue's bound, since the store began


def upload_round(store_path: Path, enrolment: Enrolment, policy: Policy, *, proxy: str | None = None,
                 verify: Any = True, stop: threading.Event | None = None) -> Round:
    """Upload what is pending in the store at ``store_path``, in the calling thread (its own event
    loop and its own store connection). ``stop`` ends the round early (the waits return at once,
    the queue stays pending)."""
    stop = stop or threading.Event()

    async def sleep(seconds: float) -> None:
        await asyncio.to_thread(stop.wait, seconds)

    def clock() -> float:
        return float("inf") if stop.is_set() else time.monotonic()

    with Store(store_path, retention_days=None) as store:
        source = StoreSource(store)
        report = Report()
        refused = False

        async def go() -> None:
            nonlocal refused
            async with Uploader(enrolment.urls, enrolment.credential, policy=policy, proxy=proxy or enrolment.proxy,
                                verify=verify, sleep=sleep, clock=clock) as up:
                try:
                    await up.run(source, report)
                except UploadRefused:
                    refused = True

        asyncio.run(go())
        status = Status.load(store)
        status.last_attempt = time.time()
        for reason, n in report.errors.items():
            status.errors[reason] = status.errors.get(reason, 0) + n
        status.uploaded += report.sent
        if report.last_success is not None:
            status.last_success = report.last_success
        if refused or not report.complete:
            status.last_reason = report.last_reason
            status.last_error = report.last_error
        else:
            status.last_reason = status.last_error = None
        store.set_meta({STATUS_KEY: json.dumps(asdict(status))})
        return Round(report, refused, store.pending_runs(), status, int(store.meta("upload_expired") or 0))



def publish(state: MetricsState, done: Round) -> None:
    """A round's outcome into the daemon's metrics (``probe_upload_*``)."""

    def update(h: Health) -> None:
        h.upload_enabled = True
        h.upload_pending = done.pending
        h.upload_last_success = done.status.last_success or 0.0
        h.upload_expired = done.expired
        for reason, n in done.report.errors.items():
            h.upload_errors[reason] = h.upload_errors.get(reason, 0) + n

    state.update_health(update)


def _daemon_round(store_path: Path, settings: Upload, policy: Policy, stop: threading.Event) -> Round:
    """One round with the settings' enrolment file, URLs, proxy and CA (in the upload thread)."""
    enrolment = load(Path(settings.credential).expanduser() if settings.credential else config_path())
    if settings.urls:
        enrolment = replace(enrolment, urls=tuple(settings.urls))
    return upload_round(store_path, enrolment, policy, proxy=settings.proxy, verify=tls_verify(settings.cacert),
                        stop=stop)


async def upload_loop(store_path: Path, settings: Upload, state: MetricsState) -> None:
    """The daemon's upload task: a round every ``settings.interval`` seconds, each in a thread of
    its own (:func:`upload_round`), until cancelled (the round in flight then stops waiting).

    A round retries (backoff with jitter, Retry-After) for at most ``interval`` seconds, then
    publishes what happened (metrics, the status record); after failed rounds the next one waits
    longer, a random time up to ``interval`` × 2^failures (at most :data:`MAX_WAIT`), so that a fleet
    coming back after an outage spreads out."""
    stop = threading.Event()
    policy = Policy(batch_size=settings.batch_size, deadline_s=settings.interval)
    rng = random.Random()
    failures = 0
    state.update_health(lambda h: setattr(h, "upload_enabled", True))
    said: str | None = None
    try:
        while True:
            try:
                done = await asyncio.to_thread(_daemon_round, store_path, settings, policy, stop)
                publish(state, done)
                now = done.status.words()
                fields = {"sent": done.report.sent, "pending": done.pending}
            except (EnrolError, StoreError) as exc:
                now, fields = str(exc), {}
            failures = 0 if now is None else failures + 1
            if now != said:  # the first failure and the recovery, once each
                if now is None:
                    log.info("upload ok", extra={"fields": fields})
                else:
                    log.warning("upload failing", extra={"fields": {**fields, "error": now}})
                said = now
            ceiling = min(MAX_WAIT, settings.interval * 2 ** min(failures, 16))
            await asyncio.sleep(rng.uniform(settings.interval, max(settings.interval, ceiling)))
    finally:
        stop.set()
