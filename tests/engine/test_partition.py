"""Cutting a posting list around new heads: parts within the limit and at least merge_below, points in reach, replicas by SPANN's rules."""

import numpy as np
import pytest

from vectorindex.engine import partition
from vectorindex.engine.head import HeadIndex


def blobs(n: int, dimensions: int = 16, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Gaussian blobs, as the index tests' data (tests.indexing.clustered), without Django."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dimensions)) * 4
    return (middle[rng.integers(0, centers, n)] + rng.normal(size=(n, dimensions))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_head_distance_is_what_the_head_index_measures(metric):
    points = blobs(40, dimensions=8, seed=1)
    centers = blobs(5, dimensions=8, seed=2)
    head = HeadIndex(8, metric, capacity=5)
    head.add(np.arange(5), centers)
    labels, found = head.search(points, 5)
    measured = partition.head_distance(metric, points, centers)
    assert measured.shape == (40, 5)
    np.testing.assert_allclose(np.take_along_axis(measured, labels.astype(np.int64), axis=1), found, rtol=1e-4, atol=1e-4)
    # One center, as a vector: a column.
    np.testing.assert_allclose(partition.head_distance(metric, points, centers[0]), measured[:, :1])


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_partition_gives_heads_among_the_points_and_parts_within_the_limit(metric):
    points = blobs(300, seed=3)
    heads, labels = partition.partition(points, 64, metric, seed=3, least=16)
    sizes = np.bincount(labels, minlength=len(heads))
    assert len(heads) >= 300 // 64 and len(set(heads.tolist())) == len(heads)
    assert ((0 <= heads) & (heads < 300)).all()
    assert sizes.max() <= 64 and sizes.min() >= 16, sizes
    assert (labels[heads] == np.arange(len(heads))).all()  # each head is in its own part
    again = partition.partition(points, 64, metric, seed=3, least=16)
    assert np.array_equal(again[0], heads) and np.array_equal(again[1], labels)  # deterministic for a seed


def test_partition_of_many_copies_of_one_vector_stays_within_the_limit():
    points = np.ones((300, 4), dtype=np.float32)
    heads, labels = partition.partition(points, 64, "l2")
    assert len(heads) >= 5 and np.bincount(labels).max() <= 64


def test_partition_never_sends_a_point_out_of_a_query_s_reach():
    """A crowd over the limit with one head among it keeps its points, over the
    limit (to be split again), rather than sending some to a far head that a
    query for them would never probe."""
    rng = np.random.default_rng(3)
    crowd = rng.normal(scale=0.05, size=(70, 16))
    far = np.concatenate([rng.normal(scale=0.05, size=(3, 16)) + 10, rng.normal(scale=0.05, size=(3, 16)) - 10])
    points = np.concatenate([crowd, far]).astype(np.float32)
    for seed in range(10):
        heads, labels = partition.partition(points, 64, "l2", seed=seed, reach=2.0)
        distance = np.sqrt(partition.head_distance("l2", points, points[heads]))
        placed = distance[np.arange(len(points)), labels]
        assert (placed <= 3.0 * distance.min(axis=1)).all()
        assert np.bincount(labels).max() <= 64  # the crowd partitioned again, among its own points
        unbounded = partition.partition(points, 64, "l2", seed=seed)[1]
        assert np.bincount(unbounded).max() <= 64  # without a reach, the limit comes first


@pytest.mark.parametrize("seed", range(8))
def test_a_split_leaves_no_part_below_merge_below(seed):
    """A list just over the limit, in many dimensions: one central vector is the
    nearest head of nearly every point and outliers head parts of one or two
    (k-means' heads split 25 points 23/1/1), which merge gives straight back to
    the central list, which splits again. Each part holds at least merge_below
    points, and each point sits with its nearest head (a reassign after the
    split would move it there otherwise)."""
    points = blobs(25 + seed, dimensions=64, centers=1, seed=seed)
    heads, labels = partition.partition(points, 24, "l2", seed=seed, reach=2.0, least=6)
    sizes = np.bincount(labels, minlength=len(heads))
    assert len(heads) >= 2 and sizes.min() >= 6 and sizes.max() <= 24, sizes
    nearest = partition.head_distance("l2", points, points[heads]).argmin(axis=1)
    assert (labels == nearest).all()


def test_copies_of_one_vector_are_split_into_parts_of_at_least_merge_below():
    points = np.ones((300, 4), dtype=np.float32)
    heads, labels = partition.partition(points, 64, "l2", least=16)
    sizes = np.bincount(labels, minlength=len(heads))
    assert len(heads) >= 5 and sizes.min() >= 16 and sizes.max() <= 64, sizes


def test_replicate_keeps_each_point_in_its_part_and_copies_boundary_points_by_the_rules():
    points = blobs(200, dimensions=8, centers=4, seed=5)
    heads = np.random.default_rng(5).choice(200, size=6, replace=False)
    centers = points[heads]
    distance = partition.head_distance("l2", points, centers)
    labels = distance.argmin(axis=1)  # each point in its nearest head's part
    single = partition.replicate(points, centers, labels, "l2", limit=200, replicas=1, epsilon=10.0)
    assert [part.tolist() for part in single] == [np.flatnonzero(labels == j).tolist() for j in range(6)]

    parts = partition.replicate(points, centers, labels, "l2", limit=200, replicas=2, epsilon=0.5)
    true = np.sqrt(distance)
    between = partition.head_distance("l2", centers, centers)
    copies = 0
    for j, members in enumerate(parts):
        assert (np.diff(members) > 0).all()  # sorted, each point once
        assert set(np.flatnonzero(labels == j).tolist()) <= set(members.tolist())
        for row in set(members.tolist()) - set(np.flatnonzero(labels == j).tolist()):
            copies += 1
            # The closure rule (within ε of the nearest head's distance) and
            # the RNG rule (the point is nearer to j than its own head is).
            assert true[row, j] <= 1.5 * true[row].min() + 1e-6
            assert between[j, labels[row]] > distance[row, j]
    in_parts = np.bincount(np.concatenate(parts), minlength=len(points))
    assert copies and in_parts.min() == 1 and in_parts.max() <= 2
    # ε = 0: no other head is as near as the nearest.
    assert sum(map(len, partition.replicate(points, centers, labels, "l2", limit=200, replicas=2, epsilon=0.0))) == 200
    # A full part takes no copies: none goes over the limit.
    sizes = np.bincount(labels, minlength=6)
    capped = partition.replicate(points, centers, labels, "l2", limit=int(sizes.max()), replicas=3, epsilon=0.5)
    assert max(map(len, capped)) <= sizes.max()
