"""``python -m bench <benchmark> [options]``: run one benchmark; ``--help`` on each.

    python -m bench search --limit 20000     recall–speed sweep, baselines, memory
    python -m bench writes --limit 20000     saves and bulk_create, with and without the index
    python -m bench stream                   update stability under inserts and deletes
    python -m bench exact --limit 100000     the exact path alone
    python -m bench plots --search F.json    PNG plots of saved results
    python -m bench garbage --limit 10900    half the rows deleted and maintained, against a fresh build
    python -m bench torture --minutes 10     writers, worker and database killed over and over; every row checked
    python -m bench side-by-side --limit 20000   pgvector and vectorindex, sweeps alternated, compared at equal recall
    python -m bench synthetic --out DIR      a synthetic data set of any dimension, with its exact answers
    python -m bench workers --workers 1,2,4  maintenance jobs a second with several Celery worker processes
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "search": "bench.search",
    "writes": "bench.writes",
    "stream": "bench.stream",
    "exact": "bench.exact",
    "plots": "bench.plots",
    "garbage": "bench.garbage",
    "torture": "bench.torture",
    "side-by-side": "bench.side_by_side",
    "synthetic": "bench.synthetic",
    "workers": "bench.workers",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(__doc__.strip())
        raise SystemExit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    name = sys.argv.pop(1)
    sys.argv[0] = f"python -m bench {name}"
    importlib.import_module(BENCHMARKS[name]).main()


if __name__ == "__main__":
    main()
