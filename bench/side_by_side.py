"""pgvector and vectorindex side by side: the same rows and queries, their sweeps alternated in one sitting.

Loads the first ``--limit`` rows of a data set twice: into pgvector (a table
of this run's own on PostgreSQL at ``--pgvector-url``, through
``pgvector.django``: ``VectorField`` and ``HnswIndex(m=16, ef_construction=64)``
over ``vector_cosine_ops``) and into the benchmarks' ``Row`` table on the
database of ``DATABASE_URL`` (a scratch SQLite file by default), and builds
both indexes, timed. Then ``--repetitions`` times: a sweep of pgvector's
``hnsw.ef_search`` (``--ef``), then a sweep of vectorindex's probes
(``--probes``), each after ``--warmup`` untimed queries. Every query is
``Model.objects.order_by(CosineDistance("embedding", q))[:10]``, whole
instances fetched; recall@10 is against the exact answer over the rows
loaded (the data set's ground truth when every row is loaded, else a numpy
scan), the same for both.

Prints each repetition's table (recall@10, queries/s, p50, p99 for each
setting), then queries/s at equal recall: each system's rate at each of
``--recalls``, interpolated linearly between the two points of its sweep
either side, and the ratio vectorindex / pgvector, per repetition. Writes it
all as JSON (``--json``; ``results/side-by-side-<rows>.json`` by default) and
beside it the same name in PNG: recall@10 against queries/s, both systems,
every repetition.

Without pgvector (the Python packages ``pgvector`` and ``psycopg``, a
PostgreSQL server at ``--pgvector-url``, the ``vector`` extension in its
database) it says what is missing and measures vectorindex alone.

    python -m bench side-by-side --limit 20000 --queries 1000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench side-by-side --limit 100000
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .common import ROOT, arguments, configure, dimensions, load, setup, tune
from .search import ground_truth, latency_row, recall

SCRATCH = "bench-side-by-side.sqlite3"
PGVECTOR = "pgvector"  # the database alias bench.settings adds for BENCH_PGVECTOR_URL
TABLE = "bench_pgvector_row"
M, EF_CONSTRUCTION = 16, 64
MAINTENANCE_WORK_MEM = "2GB"  # for the index build's session only


# pgvector: is it there, its table, its build ------------------------------------------


def pgvector_missing(url: str) -> str | None:
    """What stops pgvector from being measured at *url*, with how to mend it; None when nothing does.

    Creates the database and the ``vector`` extension in it when they are not there yet.
    """
    absent = [package for package in ("pgvector", "psycopg") if importlib.util.find_spec(package) is None]
    if absent:
        return (f"the Python package{'s' if len(absent) > 1 else ''} {' and '.join(absent)} "
                f"{'are' if len(absent) > 1 else 'is'} not installed: pip install pgvector \"psycopg[binary]\"")
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    try:
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True, connect_timeout=5) as server:
            if not server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        return f"no PostgreSQL to use at {url} ({first_line(error)}); start one, or name another with --pgvector-url"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as database:
            database.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as error:
        return (f"PostgreSQL at {url} cannot create the vector extension ({first_line(error)}); install pgvector "
                f"into that server (https://github.com/pgvector/pgvector#installation)")
    return None


def first_line(error: Exception) -> str:
    """The first line of *error*'s message (psycopg's run on with hints), or its kind."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def pgvector_model(dimension: int) -> type:
    """The pgvector table's model, as a pgvector-python user declares it; its queries go to PostgreSQL.

    After ``make_model`` of pgvector_django_bench.py, the pgvector benchmark
    beside the project (an id and the vector, the HNSW index in ``Meta``).
    """
    from django.db import models
    from pgvector.django import HnswIndex, VectorField

    class OnPgvector(models.Manager):
        def get_queryset(self) -> models.QuerySet:
            return super().get_queryset().using(PGVECTOR)

    index = HnswIndex(name=f"{TABLE}_hnsw", fields=["embedding"], m=M, ef_construction=EF_CONSTRUCTION,
                      opclasses=["vector_cosine_ops"])
    meta = type("Meta", (), {"app_label": "bench", "db_table": TABLE, "indexes": [index]})
    return type("PgvectorRow", (models.Model,), {"__module__": __name__, "Meta": meta, "objects": OnPgvector(),
                                                 "embedding": VectorField(dimensions=dimension)})


def load_pgvector(model: type, url: str, base: np.ndarray) -> dict:
    """The table made anew, the rows COPYed in with ids 1…N, ANALYZE, then the HNSW index built as
    a migration's AddIndex builds it; each step timed. As pgvector_django_bench.py's ``load``."""
    import psycopg
    from django.db import connections
    from pgvector.psycopg import register_vector

    connection = connections[PGVECTOR]
    index = model._meta.indexes[0]
    model._meta.indexes = []  # the table first, the index once the rows are in
    try:
        with connection.schema_editor() as editor:
            editor.execute(f'DROP TABLE IF EXISTS "{TABLE}" CASCADE')
            editor.create_model(model)
    finally:
        model._meta.indexes = [index]
    with psycopg.connect(url, autocommit=True) as raw:  # pgvector's own adapter, apart from Django's connection
        register_vector(raw)
        started = time.perf_counter()
        with raw.cursor() as cursor:
            with cursor.copy(f'COPY "{TABLE}" (id, embedding) FROM STDIN WITH (FORMAT BINARY)') as copy:
                copy.set_types(["int8", "vector"])
                for row, vector in enumerate(base):
                    copy.write_row((row + 1, vector))
            copy_seconds = time.perf_counter() - started
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('\"{TABLE}\"', 'id'), {max(len(base), 1)})")
            cursor.execute(f'ANALYZE "{TABLE}"')
    with connection.cursor() as cursor:
        cursor.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
    started = time.perf_counter()
    with connection.schema_editor() as editor:
        editor.add_index(model, index)
    build_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("SELECT pg_relation_size(%s), pg_relation_size(%s)", [index.name, TABLE])
        index_bytes, table_bytes = cursor.fetchone()
    return {"copy_seconds": round(copy_seconds, 2), "build_seconds": round(build_seconds, 1),
            "build_vectors_per_s": round(len(base) / build_seconds), "index_bytes": index_bytes,
            "table_bytes": table_bytes}


def pgvector_server() -> dict:
    """PostgreSQL's and pgvector's versions, and the index's parameters."""
    from django.db import connections

    with connections[PGVECTOR].cursor() as cursor:
        cursor.execute("SELECT version(), extversion, current_setting('shared_buffers') FROM pg_extension "
                       "WHERE extname = 'vector'")
        server, extension, shared_buffers = cursor.fetchone()
    return {"server": server, "extension": extension, "pgvector_python": importlib.metadata.version("pgvector"),
            "shared_buffers": shared_buffers, "m": M, "ef_construction": EF_CONSTRUCTION}


def sweep_pgvector(model: type, efs: list[int], queries: np.ndarray, truth_rows: np.ndarray, warmup: int) -> list[dict]:
    """pgvector's sweep: ``hnsw.ef_search`` set on its connection before each setting's queries."""
    from django.db import connections
    from pgvector.django import CosineDistance

    def nearest(ef: int):
        with connections[PGVECTOR].cursor() as cursor:
            cursor.execute(f"SET hnsw.ef_search = {int(ef)}")
        return model.objects.all()

    return sweep("pgvector", "ef_search", efs, nearest, CosineDistance, queries, truth_rows + 1, warmup)  # ids 1…N


def sweep_vectorindex(probes: list[int], queries: np.ndarray, truth: np.ndarray, warmup: int) -> list[dict]:
    """vectorindex's sweep: ``approximate(probes=P)`` for each setting."""
    from vectorindex import CosineDistance

    from .models import Row

    return sweep("vectorindex", "probes", probes, lambda p: Row.objects.approximate(probes=p), CosineDistance, queries,
                 truth, warmup)


def sweep_targets(targets: list[float], queries: np.ndarray, truth: np.ndarray, warmup: int) -> list[dict]:
    """vectorindex asked for a recall instead: ``approximate(recall=R)``, R from *targets*; the declared target
    (the index's default, what a query that says nothing reads) is R = 0. Each row says the probes it read."""
    from vectorindex import CosineDistance
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import open_index

    from .models import INDEX, Row

    rt = open_index(get_declared(INDEX), "default").runtime
    rows = sweep("vectorindex", "recall", targets, lambda r: Row.objects.approximate(recall=r) if r else Row.objects.all(),
                 CosineDistance, queries, truth, warmup)
    for row in rows:
        row["probes"] = rt.probes(row["recall"] or None)
    return rows


# The sweeps ------------------------------------------------------------------------


def sweep(system: str, knob: str, settings: list[int], nearest, distance, queries: np.ndarray, truth: np.ndarray,
          warmup: int) -> list[dict]:
    """One system's sweep over *settings*: each query through the ORM, whole instances fetched; a table line each."""
    warm = nearest(settings[0])
    for query in queries[:warmup]:
        [row.pk for row in warm.order_by(distance("embedding", query))[:10]]
    rows = []
    for setting in settings:
        queryset = nearest(setting)
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append([row.pk for row in queryset.order_by(distance("embedding", query))[:10]])
            latencies.append(time.perf_counter() - started)
        row = {knob: setting, "recall_at_10": round(recall(found, truth, 10), 4), **latency_row(latencies)}
        rows.append(row)
        print(f"{system:12s} {f'{knob} {setting}':14s} {row['recall_at_10']:9.3f} {row['queries_per_s']:9.1f} "
              f"{row['p50_ms']:8.2f} {row['p99_ms']:8.2f}", flush=True)
    return rows


def at_recall(rows: list[dict], target: float) -> float | None:
    """Queries/s at recall@10 *target*, linear between the sweep's points either side; None outside them."""
    best: dict[float, float] = {}  # settings that reach the same recall: the fastest
    for row in rows:
        best[row["recall_at_10"]] = max(row["queries_per_s"], best.get(row["recall_at_10"], 0.0))
    points = sorted(best.items())
    for (low, low_qps), (high, high_qps) in zip(points, points[1:]):
        if low <= target <= high:
            return low_qps if high == low else low_qps + (high_qps - low_qps) * (target - low) / (high - low)
    return points[0][1] if len(points) == 1 and points[0][0] == target else None


def equal_recall(repetitions: list[dict], targets: list[float]) -> list[dict]:
    """Each system's queries/s at each target recall, and vectorindex / pgvector, per repetition."""
    found = []
    for target in targets:
        runs = []
        for repetition in repetitions:
            theirs, ours = at_recall(repetition["pgvector"], target), at_recall(repetition["vectorindex"], target)
            runs.append({"pgvector_qps": None if theirs is None else round(theirs, 1),
                         "vectorindex_qps": None if ours is None else round(ours, 1),
                         "ratio": None if theirs is None or ours is None else round(ours / theirs, 2)})
        found.append({"recall_at_10": target, "runs": runs})
    return found


def print_equal_recall(rows: list[dict], repetitions: list[dict]) -> None:
    """The table of :func:`equal_recall`, then the recall each sweep spanned."""
    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{'—' if value is None else f'{value:,.{digits}f}':>{width}}"

    print("\nqueries/s at equal recall@10 (linear between the sweep points either side; —: outside the recall measured)")
    print("recall@10 " + "".join(f" | {f'run {i + 1}: pgvector':>16} vectorindex  ratio" for i in range(len(repetitions))))
    for row in rows:
        print(f"{row['recall_at_10']:9.3f} " + "".join(
            f" | {cell(run['pgvector_qps'], 16, 1)} {cell(run['vectorindex_qps'], 11, 1)} {cell(run['ratio'], 6, 2)}"
            for run in row["runs"]))
    for i, repetition in enumerate(repetitions):
        spans = {system: (min(r["recall_at_10"] for r in sweep), max(r["recall_at_10"] for r in sweep))
                 for system, sweep in repetition.items()}
        print(f"run {i + 1} measured recall@10 " + ", ".join(f"{system} {low:.3f}–{high:.3f}"
                                                          for system, (low, high) in spans.items()))


# The run ---------------------------------------------------------------------------


def build_ours(base: np.ndarray) -> dict:
    """vectorindex's build on the rows loaded, timed, and the size of its head index."""
    from django.db import connection

    from vectorindex.index import build, recovery
    from vectorindex.index.registry import get_declared

    from .models import INDEX

    declared = get_declared(INDEX)
    report = build.build(declared, seed=0)
    status = recovery.status(declared)
    calibration = report.calibration.describe() if report.calibration else "not calibrated"
    print(f"vectorindex ({connection.vendor}): {len(base):,} rows; build {report.seconds:.1f} s "
          f"({report.vectors_per_second:,.0f} vectors/s), {report.heads:,} heads; head index "
          f"{status['head_index_bytes']:,} bytes; calibrated {calibration}", flush=True)
    server = f"{connection.display_name} {'.'.join(map(str, connection.get_database_version()))}"
    return {"vendor": connection.vendor, "server": server, "build_seconds": round(report.seconds, 1),
            "build_vectors_per_s": round(report.vectors_per_second), "heads": report.heads,
            "head_index_bytes": status["head_index_bytes"], "calibration": status["probes"]}


def plot(results: dict, path: Path) -> None:
    """The run's recall–queries/s PNG at *path*, when matplotlib is installed."""
    from .plots import pyplot, side_by_side

    try:
        plt = pyplot()
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -r requirements-bench.txt)")
        return
    side_by_side(results, path, plt)
    print(f"wrote {path}")


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=20_000, queries=1000)
    parser.add_argument("--repetitions", type=int, default=2, help="sweeps of each system, alternated")
    parser.add_argument("--ef", default="20,40,80,160,320", help="pgvector's hnsw.ef_search sweep")
    parser.add_argument("--probes", default="8,16,32,64,128", help="vectorindex's probes sweep")
    parser.add_argument("--targets", default="0,0.9,0.95,0.99",
                        help="vectorindex's approximate(recall=R) points (0: the index's default, its declared target)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed queries before each sweep")
    parser.add_argument("--recalls", default="0.90,0.95,0.97,0.98,0.99", help="recall@10 targets to compare at")
    parser.add_argument("--pgvector-url", default="postgresql://postgres@127.0.0.1:5432/vectorindex_bench",
                        help="pgvector's PostgreSQL database (created, with the extension, if need be)")
    args = parser.parse_args()
    missing = pgvector_missing(args.pgvector_url)
    if missing:
        print(f"pgvector skipped: {missing}. Measuring vectorindex alone.", flush=True)
    else:
        os.environ["BENCH_PGVECTOR_URL"] = args.pgvector_url
    setup(SCRATCH, dimensions(args.dataset))
    options, app_settings = tune(args.set), configure(args.setting)
    base, pks, queries = load(args.dataset, args.limit, args.queries)
    truth_rows = ground_truth(args.dataset, base, queries)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dataset": os.path.relpath(args.dataset, ROOT), "rows": len(base),
                     "dimensions": base.shape[1], "queries": len(queries), "warmup": args.warmup,
                     "query": 'Model.objects.order_by(CosineDistance("embedding", q))[:10], instances fetched'}
    if missing:
        results["pgvector"] = {"skipped": missing}
    else:
        pgvector_rows = pgvector_model(base.shape[1])
        results["pgvector"] = {**pgvector_server(), **load_pgvector(pgvector_rows, args.pgvector_url, base)}
        print(f"pgvector {results['pgvector']['extension']} HNSW (m {M}, ef_construction {EF_CONSTRUCTION}): "
              f"{len(base):,} rows; build {results['pgvector']['build_seconds']:.1f} s "
              f"({results['pgvector']['build_vectors_per_s']:,} vectors/s), index "
              f"{results['pgvector']['index_bytes']:,} bytes", flush=True)
    results["vectorindex"] = {**build_ours(base), "options": options, "settings": app_settings}
    results["repetitions"] = []
    for repetition in range(args.repetitions):
        print(f"\nrun {repetition + 1} of {args.repetitions}: {len(queries):,} queries after {args.warmup} untimed")
        print(f"{'system':12s} {'setting':14s} recall@10       q/s   p50 ms   p99 ms")
        measured = {}
        if not missing:
            measured["pgvector"] = sweep_pgvector(pgvector_rows, [int(e) for e in args.ef.split(",")], queries,
                                                  truth_rows, args.warmup)
        measured["vectorindex"] = sweep_vectorindex([int(p) for p in args.probes.split(",")], queries,
                                                    pks[truth_rows], args.warmup)
        if args.targets:
            measured["vectorindex_targets"] = sweep_targets([float(r) for r in args.targets.split(",")], queries,
                                                            pks[truth_rows], args.warmup)
        results["repetitions"].append(measured)
    if not missing:
        results["equal_recall"] = equal_recall(results["repetitions"], [float(r) for r in args.recalls.split(",")])
        print_equal_recall(results["equal_recall"], results["repetitions"])
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    path = args.json or ROOT / "results" / f"side-by-side-{len(base)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    plot(results, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
