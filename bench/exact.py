"""How fast the exact path is: a full scan through the ORM, computed in numpy.

Loads the first ``--limit`` rows of a data set (the layout of
``../shared/data/pypi-minilm-384``) into the benchmarks' ``Row`` table on the
database of ``DATABASE_URL`` (a scratch SQLite file by default), then times
``order_by(CosineDistance(...))[:10]`` with and without an ordinary filter, and
checks every answer against a numpy scan of the same rows.

    python -m bench.exact --limit 100000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench.exact
"""

from __future__ import annotations

import json
import resource
import statistics
import time

import numpy as np

from .common import arguments, dimensions, load, setup


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=100_000, queries=20)
    parser.add_argument("--chunk-size", type=int, default=None, help="VECTORINDEX EXACT_CHUNK_SIZE")
    args = parser.parse_args()
    setup("bench-exact.sqlite3", dimensions(args.dataset))
    from django.conf import settings
    from django.db import connection

    from vectorindex import CosineDistance

    from .models import Row

    if args.chunk_size:
        settings.VECTORINDEX = {**settings.VECTORINDEX, "EXACT_CHUNK_SIZE": args.chunk_size}
        from vectorindex.conf import vectorindex_settings

        vectorindex_settings.reload()
    base, pks, queries = load(args.dataset, args.limit, args.queries)

    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    results = {"rows": len(base), "dimensions": base.shape[1], "vendor": connection.vendor}
    for label, make in {
        "top10": lambda q: Row.objects.order_by(CosineDistance("embedding", q))[:10],
        "top10_filtered": lambda q: Row.objects.filter(pk__lt=int(np.median(pks)))
        .order_by(CosineDistance("embedding", q))[:10],
    }.items():
        times, correct = [], 0
        for q in queries:
            started = time.perf_counter()
            got = [p.pk for p in make(q)]
            times.append(time.perf_counter() - started)
            scores = 1 - normed @ (q / np.linalg.norm(q))
            if label == "top10_filtered":
                scores = np.where(pks < int(np.median(pks)), scores, np.inf)
            correct += got == pks[np.lexsort((pks, scores))[:10]].tolist()
        median = statistics.median(times)
        results[label] = {
            "median_ms": round(median * 1000, 1),
            "max_ms": round(max(times) * 1000, 1),
            "rows_per_s": round(len(base) / median),
            "exact_answers": f"{correct}/{len(queries)}",
        }
        print(
            f"{label:15s} median {median * 1000:8.1f} ms  max {max(times) * 1000:8.1f} ms  "
            f"{len(base) / median:12,.0f} rows/s  exact answers {correct}/{len(queries)}"
        )
    # Memory allocated while answering one query (numpy and Python objects),
    # against the size of the vectors it scanned.
    import tracemalloc

    tracemalloc.start()
    list(Row.objects.order_by(CosineDistance("embedding", queries[0]))[:10])
    results["query_peak_alloc_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    tracemalloc.stop()
    print(f"one query allocated at most {results['query_peak_alloc_mib']} MiB while scanning "
          f"{base.nbytes / 2**20:.0f} MiB of vectors")
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["raw_vector_mib"] = round(base.nbytes / 2**20)
    print(f"peak RSS {results['peak_rss_mib']} MiB (raw vectors {results['raw_vector_mib']} MiB, held by the benchmark itself for checking)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
