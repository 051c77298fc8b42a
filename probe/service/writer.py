"""The daemon's store writer: one thread, group commit, and "done" only after the commit.

Every finished target run is handed over with :meth:`StoreWriter.submit` together with a
``done`` callback. The thread takes everything handed over since its last round, appends
it to the store and commits once (group commit: the runs that finished while the last
commit was syncing share the next one), then calls the ``done`` of each committed run, in
order. The daemon updates metrics, feeds the event detector and logs ``measured`` from
``done``, so nothing counts as done before it is on disk, and a kill -9 loses only runs
whose commit had not returned.

When the store cannot write (a full disk, a read-only file system, a store that could not
be opened at start), the records stay in the store's bounded memory buffer
(``settings.store_buffer_mb``) and their ``done`` waits; the thread tries again every
``retry`` seconds and on every new run, and when a commit succeeds every waiting run is
done at once, in order. A run that no longer fits in the buffer is refused (its records
are lost and counted in ``probe_store_records_dropped_total``). The state is in
``probe_store_writable``, ``probe_store_write_errors_total{reason}`` and
``probe_store_buffered_records``; the first failure and the recovery are logged once each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from probe.core.records import Event
from probe.service.metrics import Health, MetricsState
from probe.storage.store import StoreBufferFull, StoreError, error_reason

log = logging.getLogger("probe.service.daemon")

RETRY = 1.0  # seconds between rounds while runs wait for a failing store


class StoreLike(Protocol):
    def append(self, records: Iterable[dict[str, Any]]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def save_events(self, events: Iterable[Event]) -> None: ...


Done = Callable[[], None]


class StoreWriter:
    """Commits runs in a thread of its own; see the module docstring."""

    def __init__(self, store: StoreLike, state: MetricsState, retry: float = RETRY) -> None:
        self.store = store
        self.state = state
        self.retry = retry
        self._cond = threading.Condition()
        self._queue: list[tuple[str, Any, Done | None]] = []
        self._waiting: list[tuple[int, Done]] = []  # runs appended, not committed yet
        self._events: dict[str, Event] = {}  # events not saved yet (latest body per id)
        self._busy = False
        self._stop = False
        self._failing: str | None = None
        self._next_try = 0.0  # the reason of the failure logged, until a commit succeeds
        self._thread = threading.Thread(target=self._loop, name="probe-store-writer", daemon=True)
        self._publish()

    def start(self) -> None:
        self._thread.start()

    # -- the loop's side -------------------------------------------------------------------

    def submit(self, records: list[dict[str, Any]], done: Done) -> None:
        """Hand over one run's records; ``done`` runs (in the writer thread) once they are committed."""
        self._put("records", records, done)

    def save_events(self, events: Iterable[Event]) -> None:
        self._put("events", list(events), None)

    def flush(self) -> None:
        self._put("flush", None, None)

    def _put(self, kind: str, payload: Any, done: Done | None) -> None:
        with self._cond:
            self._queue.append((kind, payload, done))
            self._cond.notify()
        self._pending(1)

    def _pending(self, n: int) -> None:
        self.state.update_health(lambda h: setattr(h, "store_pending", h.store_pending + n))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over has been tried at least once (True) or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread after the queue is drained, then close the store (its last commit). What
        cannot be written then is lost: the error says so, always at error level."""
        self.drain(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a store call: closing under it would be unsafe
            log.error("store writer did not finish; the store is left as it is", extra={"fields": {
                "timeout_seconds": timeout, "path": _path(self.store)}})
            return
        if self._events:
            events = list(self._events.values())
            self._timed(lambda: self.store.save_events(events), "saving events failed")
        try:
            self.store.close()
        except Exception as exc:  # noqa: BLE001 - reported; the exit stays clean
            self._failing = None  # not folded into an outage already logged: this is the loss
            self._error(exc, "store close failed")
        else:
            self._done_all()
        self._publish()

    # -- the thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    if not self._cond.wait(self.retry if (self._waiting or self._events) else None):
                        break  # retry what waits
                if self._stop and not self._queue:
                    return
                batch, self._queue = self._queue, []
                self._busy = True
            try:
                self._round(batch)
                self._publish()
            except Exception:  # noqa: BLE001 - the writer must outlive any bug: a dead writer hangs the stop
                log.exception("store writer round failed", extra={"fields": {"items": len(batch)}})
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                self._pending(-len(batch))

    def _round(self, batch: list[tuple[str, Any, Done | None]]) -> None:
        for kind, payload, done in batch:
            if kind == "records":
                assert done is not None
                self._append(payload, done)
            elif kind == "events":
                self._events.update((e.id, e) for e in payload)
        flush = self._waiting or any(kind == "flush" for kind, _, _ in batch)
        if flush and time.monotonic() >= self._next_try:  # while failing: one try per ``retry``
            if self._timed(self.store.flush, "store write failed"):
                self._done_all()
            else:
                self._next_try = time.monotonic() + self.retry
        if self._events:
            events = list(self._events.values())
            if self._timed(lambda: self.store.save_events(events), "saving events failed"):
                self._events.clear()

    def _append(self, records: list[dict[str, Any]], done: Done) -> None:
        start = time.perf_counter()
        try:
            self.store.append(records)
        except StoreBufferFull as exc:
            self.state.update_health(lambda h: _inc(h.store_dropped_by, "buffer_full", len(records)))
            log.error("store buffer full, records dropped",
                      extra={"fields": {"records": len(records), "error": str(exc)}})
        except StoreError as exc:  # the commit it triggered failed: the records wait in the buffer
            self._waiting.append((len(records), done))
            self._error(exc, "store write failed")
        except Exception as exc:  # noqa: BLE001 - not buffered: lost, counted, measuring goes on
            self.state.update_health(lambda h: _inc(h.store_dropped_by, "error", len(records)))
            self._error(exc, "store write failed")
        else:
            self._waiting.append((len(records), done))
        finally:
            elapsed = time.perf_counter() - start
            self.state.update_health(lambda h: h.store_seconds.observe(elapsed))

    def _timed(self, fn: Callable[[], None], what: str) -> bool:
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - counted, logged once per outage; retried
            self._error(exc, what)
            return False
        finally:
            elapsed = time.perf_counter() - start
            self.state.update_health(lambda h: h.store_seconds.observe(elapsed))
        return True

    def _done_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        records = sum(n for n, _ in waiting)
        if self._failing is not None:
            log.warning("store writable again", extra={"fields": {"records_written": records,
                                                                   "path": _path(self.store)}})
            self._failing = None
        self.state.update_health(lambda h: setattr(h, "records_written", h.records_written + records))
        for _, done in waiting:
            try:
                done()
            except Exception:  # noqa: BLE001 - one callback must not stop the writer
                log.exception("store done callback failed", extra={"fields": {}})

    def _error(self, exc: BaseException, what: str) -> None:
        if not getattr(exc, "attempted", True):
            return  # a retry skipped inside the store's back-off: nothing was tried
        reason = getattr(exc, "reason", None) or error_reason(exc)
        self.state.update_health(lambda h: _inc(h.store_write_errors, reason, 1))
        level = logging.ERROR if self._failing != reason else logging.DEBUG
        self._failing = reason
        log.log(level, what, exc_info=exc, extra={"fields": {
            "reason": reason, "path": _path(self.store), "buffered_records": getattr(self.store, "buffered", 0),
            "note": "measuring goes on; records are kept in memory and written when the store takes writes",
        }})

    def _publish(self) -> None:
        store = self.store
        waiting = sum(n for n, _ in self._waiting)
        buffered = max(int(getattr(store, "buffered", 0)), waiting)
        size, limit = int(getattr(store, "buffered_bytes", 0)), int(getattr(store, "buffer_bytes", 0))
        writable = self._failing is None

        def update(h: Health) -> None:
            h.store_buffered, h.store_buffered_bytes, h.store_buffer_limit = buffered, size, limit
            h.store_writable = writable

        self.state.update_health(update)


def _inc(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


def _path(store: object) -> str:
    return str(getattr(store, "path", ""))

