"""What the index costs writes: single-row saves and ``bulk_create``, with the index and without.

Loads the first ``--limit`` rows of a data set into the benchmarks' ``Row``
table and builds ``bench_embedding`` on them, then writes the data set's
next rows two ways into two models:

* ``Row``, with the index;
* the same fields in a table with no index (a model made for this run and
  dropped after it),

as ``--saves`` single-row ``save()`` calls, each its own transaction (in
autocommit mode, then again each inside ``transaction.atomic()``), and as
``--bulk`` rows through ``bulk_create`` in transactions of ``--batch``. Jobs
the writes ask for (splits) are left queued by default (``--jobs manual``:
with a broker, a worker runs them); ``--jobs inline`` runs them after each
commit, as the embedded default does, and counts them in.

    python -m bench writes --limit 20000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench writes
"""

from __future__ import annotations

import json
import time

import numpy as np

from .common import arguments, configure, dimensions, load, setup, tune


def plain_model():
    """Row's fields, no index: the baseline."""
    from django.db import models

    from vectorindex import VectorField, VectorManager

    from .models import Row

    class PlainRow(models.Model):
        name = models.CharField(max_length=200, unique=True)
        summary = models.TextField()
        embedding = VectorField(dimensions=Row._meta.get_field("embedding").dimensions)

        objects = VectorManager()

        class Meta:
            app_label = "bench"
            db_table = "bench_plain_row"

    return PlainRow


def measure(model, vectors: np.ndarray, saves: int, bulk: int, batch: int, prefix: str) -> dict:
    from django.db import transaction

    started = time.perf_counter()
    for i in range(saves):
        model(name=f"{prefix}s{i}", summary="", embedding=vectors[i]).save()
    save_seconds = time.perf_counter() - started
    # The same, each save inside transaction.atomic() (as in a view under
    # ATOMIC_REQUESTS): the model without an index then pays for BEGIN and
    # COMMIT too, as the indexed one always does.
    started = time.perf_counter()
    for i in range(saves, 2 * saves):
        with transaction.atomic():
            model(name=f"{prefix}s{i}", summary="", embedding=vectors[i]).save()
    atomic_seconds = time.perf_counter() - started
    rest = vectors[2 * saves : 2 * saves + bulk]
    started = time.perf_counter()
    for start in range(0, len(rest), batch):
        with transaction.atomic():
            model.objects.bulk_create(
                model(name=f"{prefix}b{start + i}", summary="", embedding=vector)
                for i, vector in enumerate(rest[start : start + batch])
            )
    bulk_seconds = time.perf_counter() - started
    return {
        "saves": saves,
        "save_transactions_per_s": round(saves / save_seconds, 1),
        "atomic_save_transactions_per_s": round(saves / atomic_seconds, 1),
        "bulk_rows": len(rest),
        "bulk_vectors_per_s": round(len(rest) / bulk_seconds),
    }


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=20_000, queries=1)
    parser.add_argument("--saves", type=int, default=1_000)
    parser.add_argument("--bulk", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per bulk_create transaction")
    parser.add_argument("--jobs", choices=["manual", "inline"], default="manual")
    args = parser.parse_args()
    setup("bench-writes.sqlite3", dimensions(args.dataset))
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    from vectorindex.index import build
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    options = tune(args.set)
    configure(args.setting)
    base, _pks, _queries = load(args.dataset, args.limit, 1)
    extra = np.load(args.dataset / "base.f16.npy", mmap_mode="r")[args.limit : args.limit + 2 * args.saves + args.bulk]
    extra = extra.astype(np.float32)
    declared = get_declared(INDEX)
    report = build.build(declared, seed=0)
    print(f"{connection.vendor}: index built on {len(base):,} rows in {report.seconds:.1f} s")
    plain = plain_model()
    with connection.schema_editor() as editor:
        editor.create_model(plain)
    results: dict = {"vendor": connection.vendor, "rows_before": len(base), "jobs": args.jobs, "batch": args.batch,
                     "options": options, "build_seconds": round(report.seconds, 1)}
    try:
        with override_settings(VECTORINDEX={**settings.VECTORINDEX, "JOBS": args.jobs}):
            results["without_index"] = measure(plain, extra, args.saves, args.bulk, args.batch, "plain")
            results["with_index"] = measure(Row, extra, args.saves, args.bulk, args.batch, "indexed")
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(plain)
        Row.objects.filter(name__startswith="indexed").delete()
    with_index, without = results["with_index"], results["without_index"]
    results["save_ratio"] = round(with_index["save_transactions_per_s"] / without["save_transactions_per_s"], 3)
    results["atomic_save_ratio"] = round(
        with_index["atomic_save_transactions_per_s"] / without["atomic_save_transactions_per_s"], 3
    )
    results["bulk_ratio"] = round(with_index["bulk_vectors_per_s"] / without["bulk_vectors_per_s"], 3)
    for label in ("without_index", "with_index"):
        row = results[label]
        print(f"{label:14s} save(): {row['save_transactions_per_s']:8.1f} transactions/s   "
              f"save() in atomic(): {row['atomic_save_transactions_per_s']:8.1f}/s   "
              f"bulk_create: {row['bulk_vectors_per_s']:8,} vectors/s")
    print(f"with the index: saves at {results['save_ratio']:.0%} ({results['atomic_save_ratio']:.0%} in atomic()), "
          f"bulk_create at {results['bulk_ratio']:.0%} of the rate without it (jobs {args.jobs})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
