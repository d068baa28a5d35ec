"""The benchmarks on a data set of another dimension than 384: a synthetic one, small enough for the suite.

``bench side-by-side`` runs in a process of its own (it sets Django up on the
benchmarks' settings), on SQLite, with pgvector out of reach: it says so and
measures vectorindex alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import synthetic
from bench.side_by_side import at_recall, equal_recall

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing"  # no server listens on port 1


def test_synthetic_data_set_has_exact_answers(tmp_path):
    meta = synthetic.make(tmp_path, rows=300, queries=20, dimensions=16, clusters=4, seed=0)
    base = np.load(tmp_path / "base.f16.npy").astype(np.float64)
    queries = np.load(tmp_path / "queries.f32.npy").astype(np.float64)
    truth = np.load(tmp_path / "gt.i32.npy")
    assert (base.shape, queries.shape, truth.shape) == ((300, 16), (20, 16), (20, 100))
    assert (meta["dim"], json.loads((tmp_path / "meta.json").read_text())["dim"]) == (16, 16)
    scores = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        base / np.linalg.norm(base, axis=1, keepdims=True)
    ).T
    for query, row_scores in enumerate(scores):
        assert truth[query].tolist() == np.argsort(-row_scores, kind="stable")[:100].tolist()
    assert np.allclose(np.load(tmp_path / "gt_scores.f32.npy"), np.take_along_axis(scores, truth, axis=1), atol=1e-6)


def test_queries_per_second_at_a_recall_is_interpolated_between_sweep_points():
    sweep = [{"recall_at_10": 0.8, "queries_per_s": 400.0}, {"recall_at_10": 0.9, "queries_per_s": 200.0},
             {"recall_at_10": 0.9, "queries_per_s": 300.0}, {"recall_at_10": 0.98, "queries_per_s": 100.0}]
    assert at_recall(sweep, 0.85) == pytest.approx(350.0)  # the faster of the two settings at 0.9
    assert at_recall(sweep, 0.9) == 300.0
    assert at_recall(sweep, 0.94) == pytest.approx(200.0)
    assert at_recall(sweep, 0.79) is None and at_recall(sweep, 0.99) is None
    repetitions = [{"pgvector": sweep, "vectorindex": [{"recall_at_10": r, "queries_per_s": 100.0} for r in (0.7, 0.95)]}]
    assert equal_recall(repetitions, [0.85, 0.97]) == [
        {"recall_at_10": 0.85, "runs": [{"pgvector_qps": 350.0, "vectorindex_qps": 100.0, "ratio": 0.29}]},
        {"recall_at_10": 0.97, "runs": [{"pgvector_qps": 125.0, "vectorindex_qps": None, "ratio": None}]},
    ]


def test_side_by_side_on_16_dimensions_without_pgvector(tmp_path):
    synthetic.make(tmp_path / "data", rows=300, queries=20, dimensions=16, clusters=4, seed=0)
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DJANGO_SETTINGS_MODULE", "BENCH_DIMENSIONS", "BENCH_PGVECTOR_URL")}
    environment["DATABASE_URL"] = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "side-by-side", "--dataset", str(tmp_path / "data"), "--limit", "300",
         "--queries", "20", "--warmup", "5", "--probes", "2,16", "--pgvector-url", UNREACHABLE,
         "--json", str(tmp_path / "side-by-side.json")],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "pgvector skipped: " in run.stdout and "Measuring vectorindex alone." in run.stdout
    assert run.stdout.count("recall@10") >= 2  # a table each repetition
    results = json.loads((tmp_path / "side-by-side.json").read_text())
    assert (results["rows"], results["dimensions"], results["queries"]) == (300, 16, 20)
    assert results["pgvector"]["skipped"] in run.stdout
    assert "equal_recall" not in results
    assert [list(repetition) for repetition in results["repetitions"]] == [["vectorindex", "vectorindex_targets"]] * 2
    calibrated = results["vectorindex"]["calibration"]
    assert calibrated["source"] == "calibrated" and calibrated["measured_recall"] >= 0.95
    for repetition in results["repetitions"]:
        low, high = repetition["vectorindex"]
        assert (low["probes"], high["probes"]) == (2, 16)
        assert 0 < low["recall_at_10"] <= high["recall_at_10"] and high["recall_at_10"] >= 0.9
        assert high["queries_per_s"] > 0 and high["p50_ms"] <= high["p99_ms"]
        # The index's default (the calibrated target), then approximate(recall=R) for each R.
        targets = repetition["vectorindex_targets"]
        assert [row["recall"] for row in targets] == [0, 0.9, 0.95, 0.99]
        assert targets[0]["probes"] == calibrated["probes"] == targets[2]["probes"]
        assert targets[1]["probes"] <= targets[2]["probes"] <= targets[3]["probes"]
