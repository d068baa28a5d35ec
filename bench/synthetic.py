"""A synthetic data set of any size and dimension, in the layout the benchmarks read.

Unit vectors in ``--clusters`` Gaussian clusters (so that an index has
structure to find), the queries drawn from the same clusters and held out,
and the exact answer of each query over the stored (float16) base:

* ``base.f16.npy`` (rows × dimensions), ``queries.f32.npy`` (queries × dimensions);
* ``gt.i32.npy``: each query's nearest rows by cosine, nearest first, ties to
  the smaller row (up to 100 of them), and ``gt_scores.f32.npy`` their cosines,
  computed in float64;
* ``meta.json``: the counts, the dimension, the metric and how it was made.

    python -m bench synthetic --out /tmp/synthetic-50 --rows 5000 --dimensions 50
    python -m bench search --dataset /tmp/synthetic-50 --limit 5000

Needs numpy only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's *k* nearest rows by cosine (float64, ties to the smaller row), and their cosines."""
    unit_base, unit_queries = unit(base.astype(np.float64)), unit(queries.astype(np.float64))
    rows = np.empty((len(queries), k), dtype=np.int32)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for query, vector in enumerate(unit_queries):
        row_scores = unit_base @ vector
        rows[query] = np.lexsort((np.arange(len(base)), -row_scores))[:k]
        scores[query] = row_scores[rows[query]]
    return rows, scores


def make(out: Path, rows: int, queries: int, dimensions: int, clusters: int, seed: int) -> dict:
    """Write the data set into *out*; its meta.json."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimensions))

    def draw(count: int) -> np.ndarray:
        return unit(centres[rng.integers(clusters, size=count)] + rng.normal(scale=0.5, size=(count, dimensions)))

    base = draw(rows).astype(np.float16)
    held_out = draw(queries).astype(np.float32)
    truth, scores = exact(base, held_out, min(100, rows))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "base.f16.npy", base)
    np.save(out / "queries.f32.npy", held_out)
    np.save(out / "gt.i32.npy", truth)
    np.save(out / "gt_scores.f32.npy", scores)
    meta = {"n_base": rows, "n_queries": queries, "dim": dimensions, "metric": "cosine", "k": truth.shape[1],
            "clusters": clusters, "seed": seed, "made_by": "python -m bench synthetic"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (created if need be)")
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    meta = make(args.out, args.rows, args.queries, args.dimensions, args.clusters, args.seed)
    print(f"{args.out}: {meta['n_base']:,} rows and {meta['n_queries']:,} queries of {meta['dim']} dimensions, "
          f"the exact {meta['k']} nearest of each")


if __name__ == "__main__":
    main()
