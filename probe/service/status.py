"""What the probe sees, for people: the daemon's status page (``/``) and ``probe report``.

Both are built the same way: :func:`build_view` turns stored records and events into a
:class:`StatusView` (pure: each service's state in words, the events, the throughput series, the
probe's health), and :func:`render_html` turns a view into one self-contained HTML page: inline
CSS, inline SVG plots, no script, no external asset, so that it works offline and under
:data:`CSP`. Nothing private is shown: reasons and failures are scrubbed of addresses, and the
report can leave out the probe id.

Plots are drawn by matplotlib (SVG backend, ``matplotlib.figure.Figure``, no pyplot), imported
only when a page with a plot is rendered: it renders without a browser or network, and costs
about 55 MB only once somebody looks (vl-convert-python costs ~100 MB, too much for a
volunteer's machine).
"""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from probe.core import failures
from probe.core.records import Event, format_time, parse_time

#: The daemon page's Content-Security-Policy (the report carries the same as a meta tag): nothing
#: is loaded from anywhere, no script runs; inline styles only (the page's own and the SVGs').
CSP: Final = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")

STATES: Final = {
    "accessible": "accessible",
    "blocked": "blocked",
    "throttled": "throttled",
    "outage": "outage",
    "unreachable": "not reachable",
}


@dataclass(frozen=True)
class ServiceRow:
    """One target's latest verdict, in words."""

    target: str
    service: str
    state: str  # a key of STATES
    kind: str  # the kind of blocking ("tcp_ip", "throttling", ...), "" when none
    reason: str
    measured: float
    control: bool = False
    rates: tuple[float, float] | None = None  # (target, control) bytes/s of the last throughput test


@dataclass(frozen=True)
class EventRow:
    target: str
    service: str
    type: str
    start: float
    end: float | None


@dataclass(frozen=True)
class Health:
    last_run: float | None
    upload: str
    store_bytes: int | None
    records: int | None = None
    store_errors: int = 0
    started: float | None = None


@dataclass
class StatusView:
    title: str
    now: float
    since: float
    rows: list[ServiceRow]
    events: list[EventRow]
    throughput: dict[str, list[tuple[float, str, float]]]  # target -> (time, role, bytes/s)
    health: Health
    probe: list[tuple[str, str]] = field(default_factory=list)  # shown facts: country, network, probe id


#: The plain words of each upload error (metrics.UPLOAD_ERRORS).
UPLOAD_WORDS: Final[dict[str, str]] = {
    "unreachable": "cannot reach the collector (down, or blocked on this network): it will be retried; "
                   "a mirror URL or a proxy (upload.proxy) can get around a block",
    "timeout": "the collector did not answer in time: it will be retried",
    "server_error": "the collector failed (5xx): it will be retried",
    "unavailable": "the collector is overloaded or its database is down (503): it will be retried",
    "rate_limited": "the collector asked this probe to slow down (429): waiting as it asked",
    "rejected": "the collector rejected some measurements as invalid (400): they are kept here, not resent",
    "unauthorized": "the collector refused the credential (401): the enrolment was revoked; "
                    "enrol again (probe enrol URL TOKEN --force)",
    "forbidden": "the collector refused these measurements (403): they carry another probe id than "
                 "the enrolment's; enrol again with this store's probe id",
    "protocol": "the collector's answer was not understood: check the collector URL",
}


def upload_status(store: Any = None) -> str:
    """Upload to a collector, in words, from what the uploader keeps in the store
    (probe.fleet.queue: ``meta['upload_status']``, the cursor); "off" without it."""
    import json

    text = None if store is None else store.meta("upload_status")
    if not text:
        return "off (not configured)"
    state = json.loads(text)
    pending = f"{store.pending_runs()} pending"
    reason = state.get("last_reason")
    if reason:
        return f"failing: {UPLOAD_WORDS.get(reason, reason)} ({pending})"
    success = state.get("last_success")
    return f"ok, last upload {format_time(success) if success else 'never'} ({pending})"


def describe(keys: Mapping[str, Any]) -> tuple[str, str]:
    """(state, kind) of a verdict's test_keys: blocked / throttled / outage / accessible / unreachable."""
    blocking, accessible = keys.get("blocking"), keys.get("accessible")
    if blocking == "throttling":
        return "throttled", "throttling"
    if isinstance(blocking, str) and blocking:
        return "blocked", blocking
    if blocking is None:
        return "outage", ""
    return ("accessible", "") if accessible else ("unreachable", "")


def _time(record: Mapping[str, Any]) -> float:
    try:
        return parse_time(str(record["measurement_start_time"]))
    except (KeyError, ValueError):
        return 0.0


def build_view(verdicts: Iterable[Mapping[str, Any]], throughput: Iterable[Mapping[str, Any]],
               events: Iterable[Event], health: Health, *, now: float, since: float,
               title: str = "probe: what this probe sees", probe: Sequence[tuple[str, str]] = ()) -> StatusView:
    """The view of the records since ``since``: the latest verdict per target, rates, events (pure)."""
    series: dict[str, list[tuple[float, str, float]]] = {}
    for r in throughput:
        rate = (r.get("test_keys") or {}).get("rate_bytes_per_second")
        if isinstance(rate, int | float):
            role = "control" if r.get("role") == "control" else "target"
            series.setdefault(str(r["target"]), []).append((_time(r), role, float(rate)))
    latest: dict[str, Mapping[str, Any]] = {}
    for r in verdicts:
        name = str(r["target"])
        if name not in latest or _time(r) >= _time(latest[name]):
            latest[name] = r
    rows = []
    for name, r in latest.items():
        keys = r.get("test_keys") or {}
        state, kind = describe(keys)
        rows.append(ServiceRow(
            target=name, service=str(r.get("service", "")), state=state, kind=kind,
            reason=failures.scrub(str(keys.get("reason") or "")), measured=_time(r),
            control=r.get("category") == "control", rates=_last_rates(series.get(name, [])),
        ))
    order = {"blocked": 0, "throttled": 1, "outage": 2, "unreachable": 3, "accessible": 4}
    rows.sort(key=lambda row: (row.control, order[row.state], row.service, row.target))
    if health.last_run is None and rows:
        health = replace(health, last_run=max(row.measured for row in rows))
    event_rows = [EventRow(e.target, e.service, e.type, e.start_time, e.end_time) for e in events]
    event_rows.sort(key=lambda e: (e.end is not None, -e.start))
    return StatusView(title, now, since, rows, event_rows, {k: sorted(v) for k, v in series.items()}, health,
                      list(probe))


def _last_rates(points: list[tuple[float, str, float]]) -> tuple[float, float] | None:
    last: dict[str, float] = {}
    for _, role, rate in sorted(points):
        last[role] = rate
    return (last["target"], last["control"]) if {"target", "control"} <= set(last) else None


# -- Rendering ----------------------------------------------------------------------------------

STYLE: Final = """
body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:62rem;padding:0 .8rem 2rem;color:#1b1b1b}
h1{font-size:1.35rem;margin:.8rem 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
.meta{color:#555;font-size:.9rem;margin:0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .4rem;vertical-align:top;
border-bottom:1px solid #ddd}th{font-size:.85rem;color:#555}
.st{font-weight:600;white-space:nowrap;border-radius:.3rem;padding:.05rem .4rem}
.accessible{background:#dff3e3;color:#14532d}.blocked{background:#fde2e1;color:#7f1d1d}
.throttled{background:#fff0c2;color:#713f12}.outage,.unreachable{background:#e5e7eb;color:#374151}
.ongoing{font-weight:600;color:#7f1d1d}.why{font-size:.9rem;color:#333}
svg{max-width:100%;height:auto}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem}
dt{color:#555}dd{margin:0}
@media (max-width:40rem){thead{display:none}tr{display:block;border-bottom:1px solid #ccc;padding:.4rem 0}
td{display:block;border:0;padding:.1rem 0}.st{white-space:normal}
td[data-label]::before{content:attr(data-label) ": ";color:#555}}
"""


def _when(epoch: float | None) -> str:
    if not epoch:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _rate(bps: float) -> str:
    bits = bps * 8
    return f"{bits / 1e6:.1f} Mbit/s" if bits >= 1e6 else f"{bits / 1e3:.0f} kbit/s"


def state_words(row: ServiceRow) -> str:
    words = STATES[row.state]
    if row.state == "blocked":
        words += f" ({row.kind})"
    if row.state == "throttled" and row.rates is not None:
        words += f": {_rate(row.rates[0])} vs {_rate(row.rates[1])} control"
    return words


def _size(n: int | None) -> str:
    if n is None:
        return "no store"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def render_html(view: StatusView, *, refresh: int | None = None, csp_meta: bool = False) -> str:
    """One self-contained HTML page (no script, no external asset)."""
    e = html.escape
    head = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            '<meta name="referrer" content="no-referrer">']
    if csp_meta:
        head.append(f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">')
    if refresh:
        head.append(f'<meta http-equiv="refresh" content="{refresh}">')
    head.append(f"<title>{e(view.title)}</title><style>{STYLE}</style></head><body>")
    out = head
    out.append(f"<h1>{e(view.title)}</h1>")
    facts = [f"{e(k)}: {e(v)}" for k, v in view.probe]
    out.append(f'<p class="meta">{" · ".join([*facts, f"from {_when(view.since)} to {_when(view.now)}"])}</p>')
    out.append('<h2 id="services">Services now</h2>')
    if not view.rows:
        out.append("<p>No measurement yet.</p>")
    else:
        out.append("<table><thead><tr><th>service</th><th>target</th><th>state</th><th>why</th>"
                   "<th>measured</th></tr></thead><tbody>")
        for row in view.rows:
            name = e(row.target) + (" (control)" if row.control else "")
            out.append(
                f'<tr data-target="{e(row.target)}" data-state="{row.state}"><td data-label="service">'
                f'{e(row.service)}</td><td data-label="target">{name}</td><td><span class="st {row.state}">'
                f'{e(state_words(row))}</span></td><td class="why" data-label="why">{e(row.reason)}</td>'
                f'<td data-label="measured">{_when(row.measured)}</td></tr>')
        out.append("</tbody></table>")
    out.append('<h2 id="events">Events</h2>')
    if not view.events:
        out.append("<p>No blocking or throttling event in this period.</p>")
    else:
        out.append(timeline_svg(view))
        out.append("<table><thead><tr><th>target</th><th>type</th><th>start</th><th>end</th></tr></thead><tbody>")
        for ev in view.events:
            end = "<span class=\"ongoing\">ongoing</span>" if ev.end is None else _when(ev.end)
            out.append(f'<tr class="event" data-target="{e(ev.target)}" data-ongoing="{str(ev.end is None).lower()}">'
                       f'<td data-label="target">{e(ev.target)} ({e(ev.service)})</td><td data-label="type">'
                       f'{e(ev.type)}</td><td data-label="start">{_when(ev.start)}</td>'
                       f'<td data-label="end">{end}</td></tr>')
        out.append("</tbody></table>")
    out.append('<h2 id="throughput">Throughput against the control</h2>')
    plots = [throughput_svg(name, points) for name, points in sorted(view.throughput.items())]
    out.extend(f'<figure data-target="{e(n)}">{svg}<figcaption>{e(n)}: target (solid) and control (dashed) '
               f'transfer rate</figcaption></figure>' for n, svg in zip(sorted(view.throughput), plots, strict=True))
    if not plots:
        out.append("<p>No throughput test in this period.</p>")
    h = view.health
    out.append('<h2 id="health">The probe</h2><dl>')
    items = [("last measurement", _when(h.last_run)), ("upload", h.upload), ("store size", _size(h.store_bytes))]
    if h.records is not None:
        items.append(("records stored", str(h.records)))
    if h.store_errors:
        items.append(("store write errors", str(h.store_errors)))
    if h.started is not None:
        items.append(("running since", _when(h.started)))
    out.extend(f'<dt>{e(k)}</dt><dd data-health="{e(k)}">{e(v)}</dd>' for k, v in items)
    out.append("</dl></body></html>\n")
    return "".join(out)


def timeline_svg(view: StatusView) -> str:
    """Events as bars on a time line, one row per target (start to end, or to now while ongoing), from a
    little before the first event shown to now."""
    figure, axes = _figure(max(1.6, 0.45 * len({ev.target for ev in view.events}) + 0.9))
    names = sorted({ev.target for ev in view.events})
    for ev in view.events:
        start = max(ev.start, view.since)
        end = view.now if ev.end is None else ev.end
        axes.broken_barh([(_num(start), max(_num(end) - _num(start), 1e-4))], (names.index(ev.target) - 0.35, 0.7),
                         color="#b91c1c" if ev.end is None else "#9ca3af")
    axes.set_yticks(range(len(names)), names)
    first = min(max(ev.start, view.since) for ev in view.events)
    axes.set_xlim(_num(max(view.since, first - max(60.0, 0.1 * (view.now - first)))), _num(view.now))
    _date_axis(axes)
    return _svg(figure)


def throughput_svg(name: str, points: list[tuple[float, str, float]]) -> str:
    figure, axes = _figure(2.4)
    for role, style in (("target", "-"), ("control", "--")):
        mine = [(t, r) for t, kind, r in points if kind == role]
        if mine:
            axes.plot([_num(t) for t, _ in mine], [r * 8 / 1e6 for _, r in mine], style,
                      marker="o" if len(mine) <= 50 else None, markersize=3, label=role,
                      color="#1d4ed8" if role == "target" else "#6b7280")
    axes.set_ylabel("Mbit/s")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    _date_axis(axes)
    return _svg(figure)


def _num(epoch: float) -> float:
    return epoch / 86400.0  # matplotlib's date numbers: days since 1970-01-01


def _figure(height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # lazily: ~55 MB and 2 s, only once somebody looks

    figure = Figure(figsize=(7.5, height))
    # fixed margins: a constrained layout doubled the time of each plot (bench/status_page.py)
    figure.subplots_adjust(left=0.2, right=0.98, top=0.96, bottom=0.5 / height + 0.05)
    return figure, figure.add_subplot()


def _date_axis(axes: Any) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.tick_params(labelsize=8)


_STRIP: Final = (re.compile(r"<\?xml[^>]*>\s*"), re.compile(r"<!DOCTYPE[^>]*>\s*"),
                 re.compile(r"<metadata>.*?</metadata>\s*", re.S))


def _svg(figure: Any) -> str:
    """The figure as inline SVG: no XML prolog, no DOCTYPE (it names a URL), no metadata."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):  # text as <text> in the page's fonts, not as glyph paths
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    for pattern in _STRIP:
        text = pattern.sub("", text)
    return text


# -- From the store -----------------------------------------------------------------------------


def store_bytes(path: str | Path) -> int | None:
    """The store's size on disk (with its write-ahead log), None when there is no store."""
    total, found = 0, False
    for suffix in ("", "-wal"):
        try:
            total += Path(f"{path}{suffix}").stat().st_size
            found = True
        except OSError:
            pass
    return total if found else None


def view_from_store(path: str | Path, *, since: float, now: float, title: str = "probe: what this probe sees",
                    probe: Sequence[tuple[str, str]] = (), started: float | None = None,
                    store_errors: int = 0) -> StatusView:
    """Read the records and events since ``since`` (read-only, beside the writer) and build the view."""
    from probe.storage.store import Store

    with Store(path, readonly=True) as store:  # streamed: only the latest verdict per target is kept
        health = Health(last_run=None, upload=upload_status(store), store_bytes=store_bytes(path),
                        store_errors=store_errors, started=started)
        events = store.events(since=since, until=now + 1)
        return build_view(store.query(since=since, until=now + 1, record_type="verdict"),
                          store.query(since=since, until=now + 1, test_name="throughput"), events, health,
                          now=now, since=since, title=title, probe=probe)
