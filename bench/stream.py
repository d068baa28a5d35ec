"""Update stability (SPFresh's experiment): recall and latency while rows stream in and out.

Builds ``bench_embedding`` on the first ``--build`` rows of the data set, then
inserts the next ``--stream`` rows in transactions of ``--batch`` while deleting
``--delete`` random rows along the way, with maintenance running on a Celery
worker (``--jobs celery``, the default) or inline after each commit. At
checkpoints it measures recall@10 against the exact top 10 of the rows alive
then, the p50/p99 latency of the index (the worker running meanwhile), and the
posting-list size distribution. Then, for every checkpoint, the reference: a
fresh build of exactly the rows alive at that checkpoint, measured the same
way with no writes or jobs running (``--no-references`` skips these).

    python -m bench.stream --build 30000 --stream 120000 --delete 30000 [--rate 250]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from .common import ROOT, arguments, clear, configure, dimensions, setup, tune


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=0, queries=200)
    parser.add_argument("--build", type=int, default=30_000)
    parser.add_argument("--stream", type=int, default=120_000)
    parser.add_argument("--delete", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument(
        "--rate", type=float, default=0,
        help="insert at most this many rows a second (SPFresh's fixed update rate); 0: as fast as the writer goes",
    )
    parser.add_argument(
        "--jobs",
        choices=["inline", "celery"],
        default="celery",
        help="run maintenance on a Celery worker process (Redis), or inline after each commit",
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--no-references", action="store_true", help="skip the fresh builds at the checkpoints")
    parser.add_argument(
        "--worker-nice", type=int, default=0,
        help="run the Celery worker at this nice value (as a deployment whose workers share cores with web processes)",
    )
    args = parser.parse_args()
    worker = None
    if args.jobs == "celery":
        os.environ["CELERY_BROKER_URL"] = args.broker
    setup("bench-stream.sqlite3", dimensions(args.dataset))
    if args.jobs == "celery":
        import redis

        broker = redis.Redis.from_url(args.broker)
        broker.flushdb()
        worker_log = open(ROOT / "bench-stream-worker.log", "w")
        niceness = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
        worker = subprocess.Popen(
            [*niceness, sys.executable, "-m", "bench.worker", "--pool=solo", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             # Beat inside the worker: the scan every VECTORINDEX_SCAN_INTERVAL seconds, as deployed.
             "--beat", f"--schedule={ROOT / 'bench-stream-beat'}"],
            cwd=ROOT, env={**os.environ, "BENCH_TUNING": json.dumps(args.set), "BENCH_SETTINGS": json.dumps(args.setting)},
            stdout=worker_log, stderr=subprocess.STDOUT,
        )
        time.sleep(3)
    from django.conf import settings
    from django.db import connection, transaction
    from django.test import override_settings

    from vectorindex import CosineDistance
    from vectorindex.index import build, maintenance, recovery
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    options = tune(args.set)
    app_settings = configure(args.setting)
    total = args.build + args.stream
    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")[:total].astype(np.float32)
    queries = np.load(args.dataset / "queries.f32.npy")[: args.queries]
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    declared = get_declared(INDEX)

    clear()
    row_of_pk: dict[int, int] = {}
    for start in range(0, args.build, 5_000):
        made = Row.objects.bulk_create(
            Row(name=f"row{i}", summary="", embedding=base[i]) for i in range(start, min(start + 5_000, args.build))
        )
        row_of_pk.update((p.pk, start + j) for j, p in enumerate(made))
    report = build.build(declared, seed=0)
    print(f"built on {args.build:,} rows in {report.seconds:.1f} s")

    def measure(label: str, alive: dict[int, int]) -> dict:
        pks = np.array(sorted(alive))
        rows = np.array([alive[pk] for pk in pks])
        hits, latencies = [], []
        for query, unit_query in zip(queries, unit_queries):
            truth = set(pks[np.argsort(-(unit[rows] @ unit_query), kind="stable")[:10]].tolist())
            started = time.perf_counter()
            found = [p.pk for p in Row.objects.order_by(CosineDistance("embedding", query))[:10]]
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
            "posting_entries": status["posting_entries"],
            "wal_entries": status["wal_entries"],
            "queued_jobs": backlog,
        }
        print(json.dumps(point), flush=True)
        return point

    def drain() -> None:
        while worker and broker.llen("celery"):
            time.sleep(0.5)
        time.sleep(2 if worker else 0)  # the job taken last, finishing

    # The starting point: the splits the build asked for done, caches warm.
    drain()
    for query in queries[:20]:
        list(Row.objects.order_by(CosineDistance("embedding", query))[:10])
    timeline = [measure("after build", row_of_pk)]
    alive_at = [dict(row_of_pk)]
    rng = np.random.default_rng(1)
    deletes_per_batch = args.delete / max(1, args.stream / args.batch)
    owed = 0.0
    checkpoint_every = max(1, args.stream // args.checkpoints)
    started = time.perf_counter()
    write_seconds = 0.0
    measure_seconds = 0.0
    for offset in range(0, args.stream, args.batch):
        first = args.build + offset
        last = min(first + args.batch, total)
        tick = time.perf_counter()
        with transaction.atomic():
            made = Row.objects.bulk_create(Row(name=f"row{i}", summary="", embedding=base[i]) for i in range(first, last))
        row_of_pk.update((p.pk, first + j) for j, p in enumerate(made))
        owed += deletes_per_batch
        if owed >= 1:
            victims = rng.choice(list(row_of_pk), size=int(owed), replace=False).tolist()
            owed -= int(owed)
            Row.objects.filter(pk__in=victims).delete()
            for pk in victims:
                del row_of_pk[pk]
        write_seconds += time.perf_counter() - tick
        if args.rate:
            # Paced on the writing time alone: the pauses for measuring do not count as owed rows.
            ahead = (offset + args.batch) / args.rate - (time.perf_counter() - started - measure_seconds)
            if ahead > 0:
                time.sleep(ahead)
        if (offset + args.batch) % checkpoint_every < args.batch:
            measuring = time.perf_counter()
            timeline.append(measure(f"streamed {offset + args.batch:,}", row_of_pk))
            alive_at.append(dict(row_of_pk))
            measure_seconds += time.perf_counter() - measuring
    elapsed = time.perf_counter() - started
    if worker:  # let the worker finish what the writes asked for, and time how long that takes
        drained = time.perf_counter()
        drain()
        timeline.append(measure("queue drained", row_of_pk))
        alive_at.append(dict(row_of_pk))
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
    # The references: a fresh build of exactly the rows alive at each
    # checkpoint (the first checkpoint is one), measured with nothing else
    # running; for the final rows also once the splits it asks for have run.
    with override_settings(VECTORINDEX={**settings.VECTORINDEX, "JOBS": "manual"}):
        for point, alive in list(zip(timeline, alive_at))[1:] if not args.no_references else []:
            reload_rows(connection, Row, alive, base)
            build.build(declared, seed=0)
            wait_for_purge(connection)  # the build deleted the streamed index's rows
            point["fresh"] = measure(f"fresh build, {point['at']}", alive)
            point["recall_gap"] = round(point["fresh"]["recall_at_10"] - point["recall_at_10"], 4)
        if not args.no_references:
            maintenance.maintain(declared)
            timeline[-1]["fresh_maintained"] = measure("fresh build of the final rows, after its own splits", alive_at[-1])
    final = timeline[-1]
    start_p99 = timeline[0]["p99_ms"]
    result = {
        "vendor": connection.vendor,
        "options": options,
        "settings": app_settings,
        "queries": len(queries),
        "build_rows": args.build,
        "streamed": args.stream,
        "deleted": args.delete,
        "batch": args.batch,
        "jobs": args.jobs,
        "worker_nice": args.worker_nice,
        "rate": args.rate or None,
        "stream_seconds": round(elapsed, 1),
        "write_seconds": round(write_seconds, 1),
        "timeline": timeline,
        "worst_recall_gap": max((p["recall_gap"] for p in timeline if "recall_gap" in p), default=None),
        "worst_p99_ratio": round(max(p["p99_ms"] for p in timeline) / start_p99, 2),
        "final_p99_ratio": round(final["p99_ms"] / start_p99, 2),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def reload_rows(connection, model, alive: dict[int, int], base: np.ndarray) -> None:
    """Make *model*'s table hold exactly these rows (pk -> data-set row), under
    their keys; plain SQL, so the index is left alone (a build comes next)."""
    from vectorindex.engine import codec

    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
        items = sorted(alive.items())
        for start in range(0, len(items), 5_000):
            cursor.executemany(
                f"INSERT INTO {table} (id, name, summary, embedding) VALUES (%s, %s, %s, %s)",
                [(pk, f"row{row}", "", codec.to_bytes(base[row])) for pk, row in items[start : start + 5_000]],
            )
    wait_for_purge(connection)


def wait_for_purge(connection, most: int = 1_000, seconds: float = 300) -> None:
    """MariaDB: wait until InnoDB has purged what a mass DELETE left (it competes with the queries measured next)."""
    if connection.vendor != "mysql":
        return
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count FROM information_schema.INNODB_METRICS WHERE name = 'trx_rseg_history_len'")
            row = cursor.fetchone()
            if row is None or row[0] <= most:
                return
            time.sleep(1)


if __name__ == "__main__":
    main()
