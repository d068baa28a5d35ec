"""The exact kernels against textbook formulas, row by row."""

import math

import numpy as np
import pytest

from vectorindex.engine import distances


def reference(metric, row, query):
    row = [float(x) for x in row]
    query = [float(x) for x in query]
    dot = sum(a * b for a, b in zip(row, query))
    if metric == "l2":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(row, query)))
    if metric == "l1":
        return sum(abs(a - b) for a, b in zip(row, query))
    if metric == "ip":
        return -dot
    norms = math.sqrt(sum(a * a for a in row)) * math.sqrt(sum(b * b for b in query))
    return 1 - max(-1.0, min(1.0, dot / norms))


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
def test_kernels_match_the_definitions(metric):
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(50, 16)).astype(np.float32)
    query = rng.normal(size=16).astype(np.float32)
    result = distances.distances(metric, matrix, query)
    assert result.dtype == np.float64
    expected = [reference(metric, row, query) for row in matrix]
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_cosine_of_a_zero_vector_is_undefined():
    matrix = np.array([[0, 0], [1, 0]], dtype=np.float32)
    result = distances.distances("cosine", matrix, np.array([1, 0], dtype=np.float32))
    assert math.isnan(result[0]) and result[1] == 0.0


def test_cosine_is_clamped_to_its_range():
    vector = np.full(384, 0.1, dtype=np.float32)
    result = distances.distances("cosine", vector[None, :], vector)
    assert 0.0 <= result[0] < 1e-12


def test_empty_block():
    assert distances.distances("l2", np.empty((0, 3), np.float32), np.ones(3, np.float32)).shape == (0,)
