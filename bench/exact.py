"""How fast the exact path is: a full scan through the ORM, computed in numpy.

Loads the first ``--limit`` rows of a data set (the layout of
``../shared/data/pypi-minilm-384``) into the demo's ``Package`` table on the
database of ``DATABASE_URL`` (a scratch SQLite file by default), then times
``order_by(CosineDistance(...))[:10]`` with and without an ordinary filter, and
checks every answer against a numpy scan of the same rows.

    python -m bench.exact --limit 100000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench.exact
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "pypi-minilm-384"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=None, help="VECTORINDEX EXACT_CHUNK_SIZE")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'bench-exact.sqlite3'}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from demo_project.packages.models import Package
    from vectorindex import CosineDistance

    if args.chunk_size:
        settings.VECTORINDEX = {**settings.VECTORINDEX, "EXACT_CHUNK_SIZE": args.chunk_size}
        from vectorindex.conf import vectorindex_settings

        vectorindex_settings.reload()

    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")[: args.limit].astype(np.float32)
    queries = np.load(args.dataset / "queries.f32.npy")[: args.queries]
    call_command("migrate", verbosity=0)
    if Package.objects.count() != len(base):
        Package.objects.all().delete()
        started = time.perf_counter()
        for start in range(0, len(base), 5_000):
            Package.objects.bulk_create(
                Package(name=f"row{i}", summary="", embedding=base[i])
                for i in range(start, min(start + 5_000, len(base)))
            )
        print(f"loaded {len(base):,} rows in {time.perf_counter() - started:.1f} s")
    pk_of_row = dict(Package.objects.values_list("name", "pk"))
    pks = np.array([pk_of_row[f"row{i}"] for i in range(len(base))])

    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    results = {"rows": len(base), "dimensions": base.shape[1], "vendor": connection.vendor}
    for label, make in {
        "top10": lambda q: Package.objects.order_by(CosineDistance("embedding", q))[:10],
        "top10_filtered": lambda q: Package.objects.filter(pk__lt=int(np.median(pks)))
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
    list(Package.objects.order_by(CosineDistance("embedding", queries[0]))[:10])
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
