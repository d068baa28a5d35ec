"""The approximate index on real embeddings: build, recall, latency, memory.

Loads the first ``--limit`` rows of a data set (the layout of
``../shared/data/pypi-minilm-384``) into the demo's ``Package`` table on the
database of ``DATABASE_URL`` (a scratch SQLite file by default), builds
``package_embedding`` (cosine), then runs the data set's held-out queries
through ``order_by(CosineDistance(...))[:10]`` over a sweep of
``approximate(probes=...)``, against the exact top 10 of the same rows.

    python -m bench.index --limit 20000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench.index --limit 20000
"""

from __future__ import annotations

import json
import time

import numpy as np

from .common import arguments, load, setup


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=20_000, queries=200)
    parser.add_argument("--probes", default="8,16,32,64", help="comma-separated sweep")
    args = parser.parse_args()
    setup("bench-index.sqlite3")
    from django.db import connection

    from demo_project.packages.models import Package
    from vectorindex import CosineDistance, build, recovery
    from vectorindex.registry import get_declared

    base, pks, queries = load(args.dataset, args.limit, args.queries)

    declared = get_declared("package_embedding")
    report = build.build(declared, seed=0)
    status = recovery.status(declared)
    results = {
        "vendor": connection.vendor,
        "rows": len(base),
        "build_seconds": round(report.seconds, 2),
        "build_vectors_per_s": round(report.vectors_per_second),
        "heads": report.heads,
        "posting_entries": report.entries,
        "head_index_bytes": status["head_index_bytes"],
        "raw_vector_bytes": status["raw_vector_bytes"],
        "head_index_share": round(status["head_index_share"], 4),
        "sweep": [],
    }
    print(
        f"{connection.vendor}: {len(base):,} rows; build {report.seconds:.1f} s "
        f"({report.vectors_per_second:,.0f} vectors/s), {report.heads:,} heads, "
        f"{report.entries:,} posting entries; head index {status['head_index_bytes']:,} bytes = "
        f"{status['head_index_share']:.1%} of raw vectors"
    )

    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    truth = [set(pks[np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10]].tolist()) for q in queries]
    nearest = Package.objects.all()
    list(nearest.order_by(CosineDistance("embedding", queries[0]))[:10])  # load the head index
    for probes in [int(p) for p in args.probes.split(",")]:
        latencies, hits = [], []
        for query, expected in zip(queries, truth):
            started = time.perf_counter()
            found = [p.pk for p in nearest.approximate(probes=probes).order_by(CosineDistance("embedding", query))[:10]]
            latencies.append(time.perf_counter() - started)
            hits.append(len(expected & set(found)) / 10)
        row = {
            "probes": probes,
            "recall_at_10": round(float(np.mean(hits)), 4),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
            "queries_per_s": round(len(latencies) / sum(latencies), 1),
        }
        results["sweep"].append(row)
        print(
            f"probes {probes:4d}: recall@10 {row['recall_at_10']:.3f}  p50 {row['p50_ms']:6.1f} ms  "
            f"p95 {row['p95_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  {row['queries_per_s']:7.1f} q/s"
        )
    exact = []
    for query in queries[:20]:
        started = time.perf_counter()
        list(nearest.exact().order_by(CosineDistance("embedding", query))[:10])
        exact.append(time.perf_counter() - started)
    results["exact_p50_ms"] = round(float(np.median(exact)) * 1000, 1)
    print(f"exact path: p50 {results['exact_p50_ms']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
