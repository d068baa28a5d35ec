"""Update stability (SPFresh's experiment): recall and latency while rows stream in and out.

Builds ``package_embedding`` on the first ``--build`` rows of the data set, then
inserts the next ``--stream`` rows in transactions of ``--batch`` while deleting
``--delete`` random rows along the way, with maintenance running as the
project's settings say (inline after each commit by default). At checkpoints it
measures recall@10 against the exact top 10 of the rows alive then, the p50/p99
latency of the index, and the posting-list size distribution; at the end it
compares with a fresh build of the final rows, as it commits and after the
splits it asks for.

    python -m bench.stream --build 30000 --stream 120000 --delete 30000
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from .common import ROOT, arguments, setup, tune


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=0, queries=100)
    parser.add_argument("--build", type=int, default=30_000)
    parser.add_argument("--stream", type=int, default=120_000)
    parser.add_argument("--delete", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument(
        "--jobs",
        choices=["inline", "celery"],
        default="celery",
        help="run maintenance on a Celery worker process (Redis), or inline after each commit",
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    worker = None
    if args.jobs == "celery":
        os.environ["CELERY_BROKER_URL"] = args.broker
    setup("bench-stream.sqlite3")
    if args.jobs == "celery":
        import redis

        broker = redis.Redis.from_url(args.broker)
        broker.flushdb()
        worker_log = open(ROOT / "bench-stream-worker.log", "w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "demo_project", "worker", "--pool=solo", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             # Beat inside the worker: the scan every VECTORINDEX_SCAN_INTERVAL seconds, as deployed.
             "--beat", f"--schedule={ROOT / 'bench-stream-beat'}"],
            cwd=ROOT, env=dict(os.environ), stdout=worker_log, stderr=subprocess.STDOUT,
        )
        time.sleep(3)
    from django.conf import settings
    from django.db import transaction
    from django.test import override_settings

    from demo_project.packages.models import Package
    from vectorindex import CosineDistance, build, maintenance, recovery
    from vectorindex.registry import get_declared

    options = tune(args.set)
    total = args.build + args.stream
    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")[:total].astype(np.float32)
    queries = np.load(args.dataset / "queries.f32.npy")[: args.queries]
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    declared = get_declared("package_embedding")

    Package.objects.all().delete()
    row_of_pk: dict[int, int] = {}
    for start in range(0, args.build, 5_000):
        made = Package.objects.bulk_create(
            Package(name=f"row{i}", summary="", embedding=base[i]) for i in range(start, min(start + 5_000, args.build))
        )
        row_of_pk.update((p.pk, start + j) for j, p in enumerate(made))
    report = build.build(declared, seed=0)
    print(f"built on {args.build:,} rows in {report.seconds:.1f} s")

    def measure(label: str) -> dict:
        pks = np.array(sorted(row_of_pk))
        rows = np.array([row_of_pk[pk] for pk in pks])
        hits, latencies = [], []
        for query, unit_query in zip(queries, unit_queries):
            truth = set(pks[np.argsort(-(unit[rows] @ unit_query), kind="stable")[:10]].tolist())
            started = time.perf_counter()
            found = [p.pk for p in Package.objects.order_by(CosineDistance("embedding", query))[:10]]
            latencies.append(time.perf_counter() - started)
            hits.append(len(truth & set(found)) / 10)
        status = recovery.status(declared)
        sizes = status["posting_sizes"]
        backlog = broker.llen("celery") if worker else 0
        point = {
            "at": label,
            "rows": len(pks),
            "recall_at_10": round(float(np.mean(hits)), 4),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
            "heads": status["heads"],
            "retired_heads": status["retired_heads"],
            "posting_p50": sizes.get("p50"),
            "posting_p90": sizes.get("p90"),
            "posting_max": sizes.get("max"),
            "wal_entries": status["wal_entries"],
            "queued_jobs": backlog,
        }
        print(json.dumps(point))
        return point

    timeline = [measure("after build")]
    rng = np.random.default_rng(1)
    deletes_per_batch = args.delete / max(1, args.stream / args.batch)
    owed = 0.0
    checkpoint_every = max(1, args.stream // args.checkpoints)
    started = time.perf_counter()
    write_seconds = 0.0
    for offset in range(0, args.stream, args.batch):
        first = args.build + offset
        last = min(first + args.batch, total)
        tick = time.perf_counter()
        with transaction.atomic():
            made = Package.objects.bulk_create(Package(name=f"row{i}", summary="", embedding=base[i]) for i in range(first, last))
        row_of_pk.update((p.pk, first + j) for j, p in enumerate(made))
        owed += deletes_per_batch
        if owed >= 1:
            victims = rng.choice(list(row_of_pk), size=int(owed), replace=False).tolist()
            owed -= int(owed)
            Package.objects.filter(pk__in=victims).delete()
            for pk in victims:
                del row_of_pk[pk]
        write_seconds += time.perf_counter() - tick
        if (offset + args.batch) % checkpoint_every < args.batch:
            timeline.append(measure(f"streamed {offset + args.batch:,}"))
    elapsed = time.perf_counter() - started
    if worker:  # let the worker finish what the writes asked for, and time how long that takes
        drained = time.perf_counter()
        while broker.llen("celery"):
            time.sleep(0.5)
        time.sleep(2)
        timeline.append(measure("queue drained"))
        timeline[-1]["drain_seconds"] = round(time.perf_counter() - drained, 1)
        worker.terminate()
        worker.wait(60)
        worker_log.close()
        log = (ROOT / "bench-stream-worker.log").read_text()
        timeline[-1]["jobs_run"] = {
            job: log.count(f"Task vectorindex.{job}[") // 2  # "received" and "succeeded"
            for job in ("split", "reassign", "merge", "defragment", "compact", "collect", "scan")
        }
        timeline[-1]["jobs_failed"] = log.count("raised unexpected")
    final = timeline[-1]
    # The reference: a fresh build of the final rows, measured as it commits
    # (lists the sampled heads left over the limit included) and once the
    # splits it asks for have run, the same settings' steady state.
    with override_settings(VECTORINDEX={**settings.VECTORINDEX, "JOBS": "manual"}):
        build.build(declared, seed=0)
        fresh = measure("fresh build of the final rows")
        splits = maintenance.maintain(declared)
    fresh_maintained = measure("fresh build after its own splits")
    fresh_maintained["jobs_run"] = dict(Counter(outcome.job for outcome in splits))
    result = {
        "options": options,
        "build_rows": args.build,
        "streamed": args.stream,
        "deleted": args.delete,
        "stream_seconds": round(elapsed, 1),
        "write_seconds_with_inline_maintenance": round(write_seconds, 1),
        "timeline": timeline,
        "fresh": fresh,
        "fresh_maintained": fresh_maintained,
        "recall_gap": round(fresh["recall_at_10"] - final["recall_at_10"], 4),
        "recall_gap_maintained": round(fresh_maintained["recall_at_10"] - final["recall_at_10"], 4),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
