"""Recall against speed on real embeddings, with in-memory HNSW and exact search beside it.

Loads the first ``--limit`` rows of a data set (the layout of
``../shared/data/pypi-minilm-384``) into the benchmarks' ``Row`` table on the
database of ``DATABASE_URL`` (a scratch SQLite file by default) and builds
``bench_embedding`` (cosine). Then, on the data set's held-out queries:

* the index through the ORM, ``approximate(probes=P).order_by(CosineDistance(...))[:10]``,
  over a sweep of P: recall@1 and @10 against the exact answer, latency
  p50/p95/p99 and queries/s of one client; recall@100 from ``[:100]`` on the
  first ``--queries-at-100`` queries;
* queries/s of 2 client processes at ``--clients-probes``, and each client's
  resident memory (it holds the head index, nothing else of the data);
* baselines on the same queries: hnswlib over every vector in memory (a sweep
  of ef), an exact numpy scan, and the exact path through the ORM.

The exact answer is the data set's ground truth (``gt.i32.npy``) when every
row is loaded, else a numpy scan of the rows loaded. Prints as it goes and
writes everything as JSON with ``--json``.

    python -m bench search --limit 20000
    DATABASE_URL=mysql://root@127.0.0.1:3306/vectorindex_bench python -m bench search
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from .common import arguments, configure, dimensions, load, setup, tune

SCRATCH = "bench-search.sqlite3"
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's *k* nearest rows by cosine (all rows if fewer), nearest first (ties: lower row)."""
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    k = min(k, len(base))
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = unit_queries[start : start + 100] @ unit.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, (candidates, score) in enumerate(zip(top, scores)):
            result[start + row] = candidates[np.lexsort((candidates, -score[candidates]))]
    return result


def ground_truth(dataset: Path, base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    full = np.load(dataset / "base.f16.npy", mmap_mode="r").shape[0]
    if len(base) == full and (dataset / "gt.i32.npy").exists():
        return np.load(dataset / "gt.i32.npy")[: len(queries)].astype(np.int64)
    return exact_top(base, queries, 100)


def recall(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def latency_row(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "queries_per_s": round(len(ms) / (ms.sum() / 1000), 1),
    }


def rss_mib() -> dict[str, float]:
    """Resident memory of this process now and at its peak (Linux /proc)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields.get("VmRSS"), "peak_rss_mib": fields.get("VmHWM")}


def client(queries: np.ndarray, probes: int, start_at: float, settings: list[str], app_settings: list[str]) -> dict:
    """One client process: Django, the head index, these queries; nothing else of the data."""
    setup(SCRATCH, queries.shape[1])
    tune(settings)
    configure(app_settings)
    from vectorindex import CosineDistance

    from .models import Row

    before = rss_mib()
    nearest = Row.objects.approximate(probes=probes)
    list(nearest.order_by(CosineDistance("embedding", queries[0]))[:10])  # loads the head index
    loaded = rss_mib()
    while time.time() < start_at:
        time.sleep(0.01)
    started = time.perf_counter()
    for query in queries:
        list(nearest.order_by(CosineDistance("embedding", query))[:10])
    return {
        "seconds": time.perf_counter() - started,
        "queries": len(queries),
        "rss_before_head_mib": before["rss_mib"],
        "rss_after_head_mib": loaded["rss_mib"],
        **rss_mib(),
    }


def two_clients(queries: np.ndarray, probes: int, settings: list[str], app_settings: list[str]) -> dict:
    """Two processes, as two web workers: each with one BLAS thread.

    OpenBLAS's default, a thread per core in each process, has the two
    clients' threads spin against each other on this 2-core machine.
    """
    context = multiprocessing.get_context("spawn")
    halves = np.array_split(queries, 2)
    start_at = time.time() + 20  # both set up before either starts
    saved = {key: os.environ.get(key) for key in BLAS_THREADS}
    os.environ.update(dict.fromkeys(BLAS_THREADS, "1"))  # read by numpy as the children import it
    try:
        with context.Pool(2) as pool:
            results = pool.starmap(client, [(half, probes, start_at, settings, app_settings) for half in halves])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    wall = max(r["seconds"] for r in results)
    return {
        "probes": probes,
        "blas_threads_per_client": 1,
        "queries_per_s": round(sum(r["queries"] for r in results) / wall, 1),
        "clients": results,
    }


def hnsw_baseline(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, efs: list[int]) -> dict:
    """hnswlib over every vector, in this process's memory: what holding it all in RAM gives."""
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    started = time.perf_counter()
    index.init_index(max_elements=len(base), M=16, ef_construction=200)
    index.add_items(base, np.arange(len(base)))
    seconds = time.perf_counter() - started
    result = {"build_seconds": round(seconds, 1), "build_vectors_per_s": round(len(base) / seconds),
              "index_bytes": index.index_file_size(), "sweep": []}
    print(f"hnswlib (M 16, ef_construction 200): built in {seconds:.1f} s, {result['index_bytes']:,} bytes")
    index.set_num_threads(1)
    for ef in efs:
        index.set_ef(max(ef, 10))
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            labels, _ = index.knn_query(query, k=10)
            latencies.append(time.perf_counter() - started)
            found.append(labels[0].tolist())
        row = {"ef": ef, "recall_at_1": round(recall(found, truth, 1), 4),
               "recall_at_10": round(recall(found, truth, 10), 4), **latency_row(latencies)}
        result["sweep"].append(row)
        print(f"  ef {ef:4d}: recall@10 {row['recall_at_10']:.3f}  p50 {row['p50_ms']:6.2f} ms  "
              f"{row['queries_per_s']:8.1f} q/s")
    return result


def numpy_baseline(base: np.ndarray, queries: np.ndarray) -> dict:
    """An exact scan over normalised vectors in memory, one query at a time."""
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        scores = unit @ (query / np.linalg.norm(query))
        top = np.argpartition(-scores, 10)[:10]
        _ranked = top[np.argsort(-scores[top])]  # the answer, ranked: part of what is timed
        latencies.append(time.perf_counter() - started)
    return latency_row(latencies)


def set_buffer_pool(size: int) -> int:
    """Resize MariaDB's buffer pool and wait for the resize to finish; its size now."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SET GLOBAL innodb_buffer_pool_size = {int(size)}")
        for _ in range(600):
            cursor.execute("SHOW STATUS LIKE 'Innodb_buffer_pool_resize_status'")
            row = cursor.fetchone()
            if not row or not row[1] or "Completed" in row[1] or "complete" in row[1].lower():
                break
            time.sleep(0.5)
        cursor.execute("SELECT @@innodb_buffer_pool_size")
        return int(cursor.fetchone()[0])


def disk_reads() -> int:
    """Pages InnoDB has read from disk since the server started."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'")
        return int(cursor.fetchone()[1])


def shrink_buffer_pool(share: float) -> dict:
    """Set the buffer pool to *share* of the posting bytes. InnoDB reads with O_DIRECT
    (MariaDB's default), so a page not in the pool is a read from the disk, not the OS cache."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT SUM(LENGTH(payload)) FROM vectorindex_posting")
        posting_bytes = int(cursor.fetchone()[0])
        cursor.execute("SELECT @@innodb_flush_method")
        flush_method = cursor.fetchone()[0]
    size = set_buffer_pool(max(int(posting_bytes * share), 1))
    result = {"posting_bytes": posting_bytes, "buffer_pool_bytes": size, "share": round(size / posting_bytes, 3),
              "flush_method": flush_method, "reads_from_disk": disk_reads()}
    print(f"larger than RAM: buffer pool {size / 2**20:,.1f} MiB = {size / posting_bytes:.1%} of "
          f"{posting_bytes / 2**20:,.1f} MiB of posting payloads ({flush_method})")
    return result


def baselines(args, results: dict, base: np.ndarray, queries: np.ndarray, truth_rows: np.ndarray) -> None:
    """The exact paths, two clients and hnswlib, with the sweep's ratios to them."""
    from django.db import connection

    from vectorindex import CosineDistance

    from .models import Row

    nearest = Row.objects.all()
    orm_exact = []
    for query in queries[: args.orm_exact_queries]:
        started = time.perf_counter()
        list(nearest.exact().order_by(CosineDistance("embedding", query))[:10])
        orm_exact.append(time.perf_counter() - started)
    results["orm_exact"] = latency_row(orm_exact)
    print(f"exact path through the ORM: p50 {results['orm_exact']['p50_ms']:.1f} ms, "
          f"{results['orm_exact']['queries_per_s']:.2f} q/s")
    results["numpy_exact"] = numpy_baseline(base, queries)
    print(f"exact numpy scan in memory: p50 {results['numpy_exact']['p50_ms']:.2f} ms, "
          f"{results['numpy_exact']['queries_per_s']:.1f} q/s")
    connection.close()  # the clients have their own connections
    results["two_clients"] = two_clients(queries, args.clients_probes, args.set, args.setting)
    at = f"probes {args.clients_probes}" if args.clients_probes else "the index's default probes"
    print(f"2 clients at {at}: {results['two_clients']['queries_per_s']:.1f} q/s; "
          f"client RSS {[c['rss_mib'] for c in results['two_clients']['clients']]} MiB")
    if args.hnsw_ef:
        results["hnswlib"] = hnsw_baseline(base, queries, truth_rows, [int(e) for e in args.hnsw_ef.split(",")])
    # Ratios: the same machine, the same queries.
    for row in results["sweep"]:
        row["x_orm_exact"] = round(row["queries_per_s"] / results["orm_exact"]["queries_per_s"], 1)
        row["x_numpy_exact"] = round(row["queries_per_s"] / results["numpy_exact"]["queries_per_s"], 2)


def read_pace() -> dict[str, float]:
    """The moving average of µs a key per kind of read, which decides whether reads are spread."""
    from vectorindex.storage import readers

    return {kind: round(seconds * 1e6, 1) for (_alias, kind), (seconds, _reads) in sorted(readers._paces.items())}


def sweep(nearest, queries: np.ndarray, truth: np.ndarray, probes_list: list[int], queries_at_100: int) -> list[dict]:
    """Recall and latency of one client over *probes_list*."""
    from vectorindex import CosineDistance

    rows = []
    for probes in probes_list:
        approximate = nearest.approximate(probes=probes)
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append([p.pk for p in approximate.order_by(CosineDistance("embedding", query))[:10]])
            latencies.append(time.perf_counter() - started)
        found_100 = [
            list(approximate.order_by(CosineDistance("embedding", query)).values_list("pk", flat=True)[:100])
            for query in queries[:queries_at_100]
        ]
        row = {"probes": probes, "recall_at_1": round(recall(found, truth, 1), 4),
               "recall_at_10": round(recall(found, truth, 10), 4),
               "recall_at_100": round(recall(found_100, truth, 100), 4) if found_100 else None, **latency_row(latencies),
               "read_us_per_key": read_pace()}
        rows.append(row)
        pace = ", ".join(f"{kind} {us:.0f}" for kind, us in row["read_us_per_key"].items())
        print(f"probes {probes:4d}: recall@1 {row['recall_at_1']:.3f}  @10 {row['recall_at_10']:.3f}  "
              f"@100 {row['recall_at_100'] or float('nan'):.3f}  p50 {row['p50_ms']:6.1f}  p95 {row['p95_ms']:6.1f}  "
              f"p99 {row['p99_ms']:6.1f} ms  {row['queries_per_s']:7.1f} q/s  (µs a key: {pace or 'one connection'})",
              flush=True)
    return rows


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], limit=299_000, queries=1000)
    parser.add_argument("--probes", default="8,16,32,64,128", help="the sweep, comma-separated")
    parser.add_argument("--queries-at-100", type=int, default=200, help="queries asked for their top 100")
    parser.add_argument("--clients-probes", type=int, help="probes for the 2-client run (default: the index's)")
    parser.add_argument("--orm-exact-queries", type=int, default=10)
    parser.add_argument("--hnsw-ef", default="16,32,64,128,256", help="the baseline's sweep; empty: skip it")
    parser.add_argument("--no-build", action="store_true", help="use the index as it is")
    parser.add_argument("--no-baselines", action="store_true", help="only the index: no exact paths, clients or hnswlib")
    parser.add_argument(
        "--buffer-pool-share", type=float,
        help="MariaDB: run the sweep in memory, then again with the InnoDB buffer pool shrunk to this share "
        "of the posting bytes (larger than RAM; the pool is set back afterwards)",
    )
    args = parser.parse_args()
    setup(SCRATCH, dimensions(args.dataset))
    from django.db import connection

    from vectorindex import CosineDistance
    from vectorindex.index import build, recovery
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    options = tune(args.set)
    app_settings = configure(args.setting)
    args.clients_probes = args.clients_probes or options["probes"]
    base, pks, queries = load(args.dataset, args.limit, args.queries)
    truth_rows = ground_truth(args.dataset, base, queries)
    truth = pks[truth_rows]  # as primary keys
    declared = get_declared(INDEX)
    results: dict = {"vendor": connection.vendor, "rows": len(base), "dimensions": base.shape[1],
                     "queries": len(queries), "options": options, "settings": app_settings,
                     "blas_threads": {key: os.environ.get(key) for key in BLAS_THREADS}}
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@innodb_buffer_pool_size, @@version")
            pool_bytes, version = cursor.fetchone()
        results.update(buffer_pool_bytes=int(pool_bytes), server=version)
        print(f"{version}, InnoDB buffer pool {int(pool_bytes) / 2**20:,.0f} MiB")
    if not args.no_build:
        report = build.build(declared, seed=0)
        results.update(build_seconds=round(report.seconds, 1), build_vectors_per_s=round(report.vectors_per_second),
                       heads=report.heads, posting_entries=report.entries)
        print(f"{connection.vendor}: {len(base):,} rows; build {report.seconds:.1f} s "
              f"({report.vectors_per_second:,.0f} vectors/s), {report.heads:,} heads, {report.entries:,} entries")
    status = recovery.status(declared)
    results["memory"] = {key: status[key] for key in ("head_index_bytes", "raw_vector_bytes", "head_index_share")}
    results["posting_sizes"] = status["posting_sizes"]
    print(f"head index {status['head_index_bytes']:,} bytes = {status['head_index_share']:.1%} "
          f"of the raw vectors ({status['raw_vector_bytes']:,} bytes)")

    nearest = Row.objects.all()
    # Warm-up: the head index loaded, the reader connections opened.
    for query in queries[:100]:
        list(nearest.order_by(CosineDistance("embedding", query))[:10])
    probes_list = [int(p) for p in args.probes.split(",")]
    if args.buffer_pool_share:
        # The same sweep in memory first, then with the pool shrunk: a pair
        # measured minutes apart, since this machine's speed drifts by tens
        # of per cent over an hour.
        print("in memory:")
        results["sweep_in_memory"] = sweep(nearest, queries, truth, probes_list, 0)
        restore = results["buffer_pool_bytes"]
        results["larger_than_ram"] = shrink_buffer_pool(args.buffer_pool_share)
        results["sweep"] = sweep(nearest, queries, truth, probes_list, args.queries_at_100)
        results["larger_than_ram"]["reads_from_disk"] = disk_reads() - results["larger_than_ram"]["reads_from_disk"]
        set_buffer_pool(restore)
        for row, in_memory in zip(results["sweep"], results["sweep_in_memory"]):
            row["share_of_in_memory_qps"] = round(row["queries_per_s"] / in_memory["queries_per_s"], 3)
            print(f"probes {row['probes']:4d}: {row['share_of_in_memory_qps']:.0%} of the in-memory queries/s")
    else:
        results["sweep"] = sweep(nearest, queries, truth, probes_list, args.queries_at_100)
    if not args.no_baselines:
        baselines(args, results, base, queries, truth_rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
