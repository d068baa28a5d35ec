"""Garbage after deletes: half the rows deleted, maintenance run, against a fresh build of the rows left.

Builds ``bench_embedding`` on ``--limit`` rows, deletes half of them (a
random half), runs ``maintain`` until it is done, and measures the index:
posting entries against live vectors, deleted version rows, heads, and the
latency and recall@10 of ``--queries`` queries (each pass of them timed on
its own, ``--passes`` times). Then it builds the index afresh on the rows
left and measures the same. ``--no-sweep`` leaves out the sweep job, as
maintenance was before it.

    python -m bench garbage --limit 10900 --queries 500
"""

from __future__ import annotations

import json
import time

import numpy as np

from .common import arguments, clear, configure, dimensions, load, setup, tune


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=10_900, queries=500)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sweep", action="store_true", help="maintenance without the sweep job")
    args = parser.parse_args()
    setup("bench-garbage.sqlite3", dimensions(args.dataset))
    options = tune(args.set)
    configure(args.setting + ["JOBS=manual"])
    from vectorindex.index import build, maintenance
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    declared = get_declared(INDEX)
    clear()
    _base, pks, queries = load(args.dataset, args.limit, args.queries)  # every row, ids anew
    build.build(declared, seed=args.seed)
    results = {"rows": args.limit, "queries": len(queries), "options": options, "no_sweep": args.no_sweep}
    results["built"] = measure(declared, queries, args.passes)
    print("built on every row:", summary(results["built"]), flush=True)

    doomed = np.random.default_rng(args.seed).choice(pks, size=len(pks) // 2, replace=False)
    for start in range(0, len(doomed), 1_000):
        Row.objects.filter(pk__in=doomed[start : start + 1_000].tolist()).delete()
    results["deleted"] = measure(declared, queries, args.passes)
    print("half deleted, nothing maintained:", summary(results["deleted"]), flush=True)

    if args.no_sweep:
        scan = maintenance.scan
        maintenance.scan = lambda *a, **k: [job for job in scan(*a, **k) if job[0] != "sweep"]
    started = time.perf_counter()
    run = maintenance.maintain(declared, rounds=200)
    results["maintain"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "jobs": {job: sum(1 for o in run.outcomes if o.job == job) for job in sorted({o.job for o in run.outcomes})},
        "finished": run.finished,
    }
    print("maintain:", results["maintain"], flush=True)
    results["maintained"] = measure(declared, queries, args.passes)
    print("maintained:", summary(results["maintained"]), flush=True)
    build.build(declared, seed=args.seed)
    results["fresh"] = measure(declared, queries, args.passes)
    print("fresh build of the rows left:", summary(results["fresh"]), flush=True)
    ratio = results["maintained"]["p50_ms"] / results["fresh"]["p50_ms"]
    results["p50_maintained_over_fresh"] = round(ratio, 3)
    print(f"p50 maintained / fresh: {ratio:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def measure(declared, queries: np.ndarray, passes: int) -> dict:
    """The index's size, and its queries' latency and recall@10 against the exact answer."""
    from vectorindex import CosineDistance
    from vectorindex.index.recovery import status

    from .models import Row

    report = status(declared)
    rows = list(Row.objects.values_list("pk", "embedding"))
    ids = np.array([pk for pk, _ in rows])
    matrix = np.stack([vector for _, vector in rows]).astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = ids[np.argsort(-(unit @ matrix.T), axis=1)[:, :10]]
    laps, found = [], []
    for _ in range(passes):
        times = []
        found = []
        for query in queries:
            started = time.perf_counter()
            found.append(list(Row.objects.order_by(CosineDistance("embedding", query)).values_list("pk", flat=True)[:10]))
            times.append(time.perf_counter() - started)
        laps.append(float(np.median(times) * 1000))
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist())]))
    return {
        "vectors": report["vectors"],
        "deleted_versions": report["deleted_versions"],
        "heads": report["heads"],
        "posting_entries": report["posting_entries"],
        "entries_per_vector": round(report["posting_entries"] / report["vectors"], 3),
        "p50_ms_per_pass": [round(lap, 2) for lap in laps],
        "p50_ms": round(float(np.median(laps)), 2),
        "recall_at_10": round(recall, 4),
    }


def summary(measured: dict) -> str:
    return (
        f"{measured['vectors']:,} vectors, {measured['posting_entries']:,} entries "
        f"({measured['entries_per_vector']} a vector), {measured['deleted_versions']:,} deleted versions, "
        f"{measured['heads']:,} heads; p50 {measured['p50_ms_per_pass']} ms, recall@10 {measured['recall_at_10']}"
    )


if __name__ == "__main__":
    main()
