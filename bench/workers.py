"""Maintenance jobs a second on one index with 1, 2 and 4 Celery worker processes.

Each run starts from the same index: ``--build`` rows of the data set built,
then ``--stream`` more written with jobs held back (``JOBS`` "manual"), so that
the lists they overfill wait for maintenance. The workers (``--pool=solo``,
each a process with its own head index, as on hosts of their own) are
started and ready; then the clock starts, the maintenance scan sends what is
due to the broker (Redis), and the workers run it and every job it asks for
next (reassigns, merges, further splits), the scan sending what is left
whenever the queue runs dry. The clock stops when the queue is empty, no job
is running and the scan finds nothing to do. Jobs are counted from the
workers' logs; ``vectorindex check`` runs after each run. The worker counts
alternate over the repetitions, each reported.

    DATABASE_URL=mysql://root@127.0.0.1:3306/bench_workers .venv/bin/python -m bench workers \\
        --build 20000 --stream 10000 --workers 1,2,4 --repeat 2 --json results/workers.json
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from .common import ROOT, arguments, clear, dimensions, setup

SUCCEEDED = re.compile(r"Task vectorindex\.(\w+)\[[^\]]+\] succeeded")


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=0, queries=0)
    parser.add_argument("--build", type=int, default=20_000)
    parser.add_argument("--stream", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take at most")
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = args.broker
    setup("bench-workers.sqlite3", dimensions(args.dataset))

    import redis
    from django.conf import settings
    from django.db import connection

    from vectorindex import tasks
    from vectorindex.conf import vectorindex_settings
    from vectorindex.index import build, maintenance, recovery
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    broker = redis.Redis.from_url(args.broker)
    declared = get_declared(INDEX)
    counts = [int(n) for n in args.workers.split(",")]
    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")[: args.build + args.stream].astype(np.float32)

    def prepare() -> None:
        """The same start for every run: the rows built, the stream written, its jobs waiting."""
        settings.VECTORINDEX = {**settings.VECTORINDEX, "JOBS": "manual"}
        vectorindex_settings.reload()
        clear()
        for start in range(0, args.build, 5_000):
            Row.objects.bulk_create(
                Row(name=f"row{i}", summary="", embedding=base[i]) for i in range(start, min(start + 5_000, args.build))
            )
        build.build(declared, seed=0)
        for start in range(args.build, len(base), 500):
            Row.objects.bulk_create(
                Row(name=f"row{i}", summary="", embedding=base[i]) for i in range(start, min(start + 500, len(base)))
            )
        settings.VECTORINDEX = {**settings.VECTORINDEX, "JOBS": "celery"}
        vectorindex_settings.reload()
        broker.flushdb()

    def run(workers: int, repetition: int) -> dict:
        prepare()
        due = Counter(job for job, _ in maintenance.scan(declared, "default"))
        logs = [ROOT / f"bench-workers-{i}.log" for i in range(workers)]
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.worker", "--pool=solo", "--loglevel=INFO", "-n", f"bench{i}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=os.environ.copy(), stdout=open(log, "w"), stderr=subprocess.STDOUT,
            )
            for i, log in enumerate(logs)
        ]
        try:
            deadline = time.monotonic() + 120
            while not all("ready." in log.read_text() for log in logs):
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise SystemExit("a worker did not start: " + " ".join(log.read_text()[-1500:] for log in logs))
                time.sleep(0.2)
            started = time.perf_counter()
            tasks.scan(index=INDEX, using="default")
            scans = 1
            while True:
                if time.perf_counter() - started > args.timeout:
                    raise SystemExit(f"{workers} workers did not finish within {args.timeout:.0f} s")
                if broker.llen("celery") or broker.hlen("unacked"):
                    time.sleep(0.05)
                    continue
                if not tasks.scan(index=INDEX, using="default"):
                    break
                scans += 1
            seconds = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
        done = [Counter(SUCCEEDED.findall(log.read_text())) for log in logs]
        jobs = sum(done, Counter())
        violations, _warnings = recovery.check(declared, "default")
        result = {
            "workers": workers,
            "repetition": repetition,
            "seconds": round(seconds, 2),
            "jobs": sum(jobs.values()),
            "jobs_per_second": round(sum(jobs.values()) / seconds, 2),
            "by_job": dict(sorted(jobs.items())),
            "per_worker": [sum(c.values()) for c in done],
            "due_at_start": dict(sorted(due.items())),
            "scans": scans,
            "check": "ok" if not violations else violations,
        }
        for log in logs:
            log.unlink()
        print(
            f"{workers} worker{'s' if workers > 1 else ''} (run {repetition}): {result['jobs']} jobs in {seconds:.1f} s = "
            f"{result['jobs_per_second']:.1f} jobs/s; per worker {result['per_worker']}; "
            f"{', '.join(f'{n} {job}' for job, n in result['by_job'].items())}; check {result['check']}",
            flush=True,
        )
        return result

    print(
        f"{connection.vendor}, {args.build:,} rows built + {args.stream:,} written with the jobs held back "
        f"({args.dataset.name}, {base.shape[1]}-d); worker counts {counts}, {args.repeat} repetitions",
        flush=True,
    )
    results = []
    for repetition in range(1, args.repeat + 1):
        order = counts if repetition % 2 else counts[::-1]  # alternate the order
        results.extend(run(n, repetition) for n in order)
    summary = {}
    for n in counts:
        rates = [r["jobs_per_second"] for r in results if r["workers"] == n]
        summary[n] = {"jobs_per_second": rates, "mean": round(float(np.mean(rates)), 2)}
        print(f"{n} worker{'s' if n > 1 else ''}: {' / '.join(f'{r:.1f}' for r in rates)} jobs/s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "workers",
                    "database": connection.vendor,
                    "dataset": args.dataset.name,
                    "build": args.build,
                    "stream": args.stream,
                    "cores": os.cpu_count(),
                    "runs": results,
                    "summary": summary,
                },
                indent=1,
            )
        )
