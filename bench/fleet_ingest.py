"""Fleet ingest benchmark: simulated enrolled probes uploading to collectors on loopback, then a plain
COPY of the same measurements into the same table (the physical limit on this machine).

    .venv/bin/python bench/fleet_ingest.py                       # 2,000 probes x 25 measurements, 2 collectors
    .venv/bin/python bench/fleet_ingest.py --probes 10000 --per-probe 10
    .venv/bin/python bench/fleet_ingest.py --probes 50 --per-probe 20 --json   # the smoke size

Each simulated probe is enrolled through the collector's API (its own credential) and sends its
measurements (OONI-shaped, see ``probe.fleet.localpg.sample_measurement``) in zstd JSONL batches,
as the uploader does, with ``--concurrency`` batches in flight across the fleet. Everything is
bounded: ``--deadline`` seconds for the upload phase, and the counts given.

Derived figures (extrapolated, labelled ``derived_``): the steady load of ``--fleet-size`` probes
running ``--targets-per-run`` measurements every ``--interval`` seconds, the collector cores it
needs at the measured CPU per measurement, and how long the backlog of a 1-hour outage takes to
drain at the measured rate.

Printed: measurements/s into PostgreSQL (collector path and plain COPY) and their ratio (goal >= 0.5);
also COPY with one transaction per batch from one connection (the cost of a durable commit per
acknowledged batch, without HTTP and Python) and the ratio to that;
p50/p99 batch latency, collector CPU per 1,000 measurements (user+system of the collector processes,
from /proc), PostgreSQL bytes per measurement (table + indexes + TOAST of the partitions).
PostgreSQL runs with its default durability (fsync on) in a private cluster unless --fast.

Measured (not derived) modes, same fleet and collectors; the simulated probes run in ``--workers``
separate processes, whose CPU is printed apart from the collectors':

    .venv/bin/python bench/fleet_ingest.py --probes 10000 --steady-rate 1800 --seconds 120
    .venv/bin/python bench/fleet_ingest.py --probes 10000 --drain 100 --batch 500

``--steady-rate N --seconds S``: batches of one probe's run (``--targets-per-run``) paced to an
aggregate N measurements/s for S seconds, probe after probe; prints the collectors' CPU across the
window as a fraction of one core. ``--drain M``: a backlog of M measurements per probe, all of it
encoded before the first batch is sent, then sent as fast as the collectors take it (``--batch``,
``--concurrency`` in flight); prints the time until all of it is stored and the drain rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from probe.fleet import central, contract, upload  # noqa: E402
from probe.fleet.localpg import Cluster, CollectorProcess, pg_bin, sample_measurement  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
READY: Any = None  # --drain: the simulator processes start sending together, once all have built their backlog


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def stored(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT measurement_uid) FROM measurements").fetchone()
        size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
                            " WHERE inhparent = 'measurements'::regclass").fetchone()[0]
    return int(rows), int(distinct), int(size)


async def enrol_fleet(urls: list[str], token: str, probes: int, concurrency: int) -> list[tuple[str, str]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(i: int) -> tuple[str, str]:
            async with sem:
                r = await client.post(f"{urls[i % len(urls)]}/v1/enrol", json={"token": token,
                                                                                "probe_id": f"sim-{i:05d}"})
                r.raise_for_status()
                data = r.json()
                return str(data["probe_id"]), str(data["credential"])
        return await asyncio.gather(*(one(i) for i in range(probes)))


async def post_batch(client: httpx.AsyncClient, url: str, credential: str, body: bytes, latencies: list[float],
                     statuses: dict[int, int]) -> int | None:
    """One batch: the measurements acknowledged, or None after waiting Retry-After on 429/503."""
    start = time.perf_counter()
    r = await client.post(f"{url}/v1/measurements", content=body, headers={
        "Authorization": f"Bearer {credential}", "Content-Encoding": "zstd"})
    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    if r.status_code == 200:
        latencies.append(time.perf_counter() - start)
        return sum(r.json().values())
    if r.status_code not in (429, 503):
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    return None


async def upload_fleet(urls: list[str], fleet: list[tuple[str, str]], batches: dict[str, list[bytes]],
                       concurrency: int, deadline: float) -> tuple[list[float], dict[int, int], int]:
    """Every probe's batches, ``concurrency`` in flight; retries 429/503 after Retry-After."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    acknowledged = 0
    queue: asyncio.Queue[tuple[int, str, bytes]] = asyncio.Queue()
    for i, (probe_id, credential) in enumerate(fleet):
        for body in batches[probe_id]:
            queue.put_nowait((i, credential, body))
    end = time.monotonic() + deadline
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal acknowledged
            while not queue.empty() and time.monotonic() < end:
                i, credential, body = queue.get_nowait()
                done = await post_batch(client, urls[i % len(urls)], credential, body, latencies, statuses)
                if done is None:
                    queue.put_nowait((i, credential, body))
                else:
                    acknowledged += done
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, acknowledged


def simulate(urls: list[str], fleet: list[tuple[str, str]], plan: list[tuple[int, float]], per_batch: int,
             concurrency: int, deadline: float) -> dict[str, Any]:
    """One simulator process: send ``plan`` (probe index, send-at offset s; offset < 0 = pre-encoded,
    as fast as possible) and return its latencies, counts and own CPU."""
    now = time.time()
    eager = [upload.encode([sample_measurement(fleet[i][0], now - j * 0.01, index=j, asn=f"AS{64500 + i % 20}")
                            for j in range(per_batch)]) if at < 0 else b"" for i, at in plan]
    if READY is not None:
        READY.wait()
    cpu0 = sum(os.times()[:2])
    began = time.time()

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        late: list[float] = []
        statuses: dict[int, int] = {}
        acknowledged = 0
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            start = time.monotonic()

            async def send(n: int, i: int, at: float) -> None:
                nonlocal acknowledged
                body = eager[n] or upload.encode([sample_measurement(fleet[i][0], time.time() - j * 0.01, index=j,
                                                                     asn=f"AS{64500 + i % 20}")
                                                  for j in range(per_batch)])
                async with sem:
                    if at >= 0:
                        late.append(time.monotonic() - start - at)
                    while time.monotonic() - start < deadline:
                        done = await post_batch(client, urls[i % len(urls)], fleet[i][1], body, latencies, statuses)
                        if done is not None:
                            acknowledged += done
                            return

            tasks = []
            for n, (i, at) in enumerate(plan):
                if at > 0:
                    await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
                tasks.append(asyncio.create_task(send(n, i, at)))
            await asyncio.gather(*tasks)
        return {"latencies": latencies, "late": late, "statuses": statuses, "acknowledged": acknowledged}

    result = asyncio.run(run())
    result["cpu_s"] = sum(os.times()[:2]) - cpu0
    result["start"], result["end"] = began, time.time()
    return result


def measured_run(args: argparse.Namespace, dsn: str, urls: list[str], pids: list[int],
                 fleet: list[tuple[str, str]]) -> dict[str, Any]:
    """--steady-rate or --drain: the plan split over ``--workers`` simulator processes."""
    import concurrent.futures
    import multiprocessing

    if args.steady_rate:
        per_batch = args.targets_per_run
        count = int(args.steady_rate * args.seconds / per_batch)
        plan = [(n % len(fleet), n * per_batch / args.steady_rate) for n in range(count)]
    else:
        per_batch = args.batch
        plan = [(i, -1.0) for i in range(len(fleet)) for _ in range(args.drain // per_batch)]
    total = len(plan) * per_batch
    shares = [plan[w::args.workers] for w in range(args.workers)]
    global READY
    READY = multiprocessing.get_context("fork").Barrier(args.workers)  # inherited by the forked workers
    cpu0 = sum(cpu_seconds(pid) for pid in pids)
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(simulate, urls, fleet, share, per_batch, max(1, args.concurrency // args.workers),
                               args.deadline) for share in shares]
        results = [f.result() for f in futures]
    # The clock runs from the moment every worker has its backlog built (a barrier) to the last answer.
    wall = max(r["end"] for r in results) - min(r["start"] for r in results) if args.drain else time.perf_counter() - t
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
    rows, distinct, size = stored(dsn)
    latencies = [x for r in results for x in r["latencies"]]
    late = [x for r in results for x in r["late"]]
    statuses: dict[int, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {"mode": "steady" if args.steady_rate else "drain", "probes": len(fleet), "batch": per_batch,
            "collectors": args.collectors, "workers": args.workers, "durable": not args.fast, "cores": os.cpu_count(),
            "sent": total, "acknowledged": sum(r["acknowledged"] for r in results), "stored": rows,
            "stored_distinct": distinct, "lost": total - distinct, "duplicated": rows - distinct,
            "statuses": statuses, "wall_s": round(wall, 2), "measurements_per_s": round(distinct / wall, 1),
            "batch_p50_ms": round(1000 * percentile(latencies, 0.5), 1),
            "batch_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "send_late_p99_ms": round(1000 * percentile(late, 0.99), 1) if late else None,
            "collector_cpu_s": round(cpu, 2), "collector_cores": round(cpu / wall, 3),
            "simulator_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
            "simulator_cores": round(sum(r["cpu_s"] for r in results) / wall, 3),
            "pg_bytes_per_measurement": round(size / max(1, rows)),
            "load_average_1m": os.getloadavg()[0]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--per-probe", type=int, default=25, help="measurements per probe")
    parser.add_argument("--batch", type=int, default=25, help="measurements per batch")
    parser.add_argument("--collectors", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="batches in flight across the fleet")
    parser.add_argument("--deadline", type=float, default=600.0, help="upload phase bound, seconds")
    parser.add_argument("--targets-per-run", type=int, default=54,
                        help="for the derived steady load: measurements per probe run (54 = targets.yaml)")
    parser.add_argument("--interval", type=float, default=300.0, help="for the derived steady load: run interval, s")
    parser.add_argument("--fleet-size", type=int, default=10_000, help="for the derived figures: probes in the fleet")
    parser.add_argument("--fast", action="store_true", help="PostgreSQL with fsync off (not durable)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--steady-rate", type=float, default=0.0,
                        help="measured steady load: aggregate measurements/s, in batches of --targets-per-run")
    parser.add_argument("--seconds", type=float, default=120.0, help="with --steady-rate: the window, s")
    parser.add_argument("--drain", type=int, default=0,
                        help="measured backlog drain: measurements per probe, pre-encoded, sent in --batch batches")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes for --steady-rate/--drain")
    args = parser.parse_args()
    if args.drain % args.batch:
        parser.error("--drain must be a multiple of --batch")
    if pg_bin() is None:
        print("fleet_ingest: PostgreSQL binaries missing (apt-get install postgresql)", file=sys.stderr)
        return 2
    cluster = Cluster(fast=args.fast)
    procs: list[CollectorProcess] = []
    logs = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        cluster.start()
        dsn = cluster.create_database("bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            central.migrate(conn)
            token = central.create_token(conn, "bench")
        for k in range(args.collectors):
            proc = CollectorProcess(dsn, logs / f"collector-{k}.log", extra=["--rate", "1000", "--burst", "1000"])
            proc.start()
            procs.append(proc)
        urls = [p.url for p in procs]
        t = time.perf_counter()
        fleet = asyncio.run(enrol_fleet(urls, token, args.probes, args.concurrency))
        enrol_s = time.perf_counter() - t
        if args.steady_rate or args.drain:
            figures = measured_run(args, dsn, urls, [p.proc.pid for p in procs if p.proc], fleet)
            figures["enrol_s"] = round(enrol_s, 2)
            for key, value in figures.items():
                print(f"{key}: {value}")
            if args.json:
                print(json.dumps(figures))
            return 0 if figures["lost"] == figures["duplicated"] == 0 else 1
        now = time.time()
        measurements = {pid: [sample_measurement(pid, now - j * 0.01, index=j, cc="ZZ", asn=f"AS{64500 + i % 20}")
                              for j in range(args.per_probe)] for i, (pid, _) in enumerate(fleet)}
        batches = {pid: [upload.encode(ms[k:k + args.batch]) for k in range(0, len(ms), args.batch)]
                   for pid, ms in measurements.items()}
        total = args.probes * args.per_probe
        cpu0 = sum(cpu_seconds(p.proc.pid) for p in procs if p.proc)
        t = time.perf_counter()
        latencies, statuses, acknowledged = asyncio.run(
            upload_fleet(urls, fleet, batches, args.concurrency, args.deadline))
        upload_s = time.perf_counter() - t
        cpu = sum(cpu_seconds(p.proc.pid) for p in procs if p.proc) - cpu0
        rows, distinct, size = stored(dsn)

        # The physical limit: the same rows, COPYed straight into the same (emptied) table.
        prepared = [central.row(contract.validate(m, today=dt.datetime.now(dt.UTC).date(), max_age_days=30))
                    for ms in measurements.values() for m in ms]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE measurements")
            t = time.perf_counter()
            with conn.transaction(), conn.cursor().copy(central.COPY_DIRECT) as copy:
                for r in prepared:
                    copy.write_row(r)
            copy_s = time.perf_counter() - t
        copy_rows, _, copy_size = stored(dsn)
        # The same, one transaction (one durable commit) per batch, from one connection: what the
        # per-batch acknowledgement costs PostgreSQL, without HTTP and Python on the way.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE measurements")
            t = time.perf_counter()
            for k in range(0, len(prepared), args.batch):
                with conn.transaction(), conn.cursor().copy(central.COPY_DIRECT) as copy:
                    for r in prepared[k:k + args.batch]:
                        copy.write_row(r)
            copy_batched_s = time.perf_counter() - t
    finally:
        for p in procs:
            p.stop()
        cluster.destroy()

    rate = distinct / upload_s
    copy_rate = copy_rows / copy_s
    figures: dict[str, Any] = {
        "probes": args.probes, "per_probe": args.per_probe, "batch": args.batch, "collectors": args.collectors,
        "concurrency": args.concurrency, "durable": not args.fast, "cores": os.cpu_count(),
        "sent": total, "acknowledged": acknowledged, "stored": rows, "stored_distinct": distinct,
        "lost": total - distinct, "statuses": statuses, "enrol_s": round(enrol_s, 2),
        "upload_s": round(upload_s, 2), "measurements_per_s": round(rate, 1),
        "batch_p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "batch_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "collector_cpu_s_per_1000": round(1000 * cpu / max(1, distinct), 3),
        "pg_bytes_per_measurement": round(size / max(1, rows)),
        "copy_measurements_per_s": round(copy_rate, 1), "copy_bytes_per_measurement": round(copy_size / copy_rows),
        "ratio_collector_over_copy": round(rate / copy_rate, 3),
        "copy_per_batch_measurements_per_s": round(len(prepared) / copy_batched_s, 1),
        "ratio_collector_over_copy_per_batch": round(rate * copy_batched_s / len(prepared), 3),
    }
    # Derived (extrapolated from the figures above, not measured at that scale):
    steady = args.fleet_size * args.targets_per_run / args.interval
    figures["derived_steady_measurements_per_s"] = round(steady, 1)
    figures["derived_steady_collector_cores"] = round(steady * cpu / max(1, distinct), 3)
    figures["derived_backlog_1h_drain_s"] = round(steady * 3600 / rate, 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        print(json.dumps(figures))
    return 0 if distinct == total == copy_rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
