"""The head index: hnswlib behind a lock, with its own serialisation."""

import threading

import numpy as np
import pytest

from tests.indexing import RefusingSearches
from vectorindex.engine.head import HeadIndex, prepare
from vectorindex.exceptions import HeadIndexError


def make(metric="l2", n=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    head = HeadIndex(d, metric, capacity=16)  # grows as heads are added
    head.add(np.arange(n) + 1000, vectors)
    return head, vectors


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_search_finds_the_nearest_heads(metric):
    head, vectors = make(metric)
    labels, _ = head.search(vectors[:20], 1, ef=200)
    if metric == "ip":  # the nearest by inner product need not be the vector itself
        expected = np.argmax(vectors[:20] @ vectors.T, axis=1) + 1000
    else:
        expected = np.arange(20) + 1000
    assert labels[:, 0].tolist() == expected.tolist()


def test_removed_heads_are_never_returned_and_round_trip():
    head, vectors = make("cosine")
    head.remove(np.arange(1000, 1100))
    labels, _ = head.search(vectors[:100], 5, ef=200)
    assert labels.min() >= 1100
    copy = HeadIndex.from_bytes(head.to_bytes(), 8, "cosine")
    assert copy.alive == head.alive and len(copy) == 100
    assert np.array_equal(copy.search(vectors[:50], 5, ef=200)[0], head.search(vectors[:50], 5, ef=200)[0])
    copy.add(np.array([5]), vectors[:1])  # a loaded index still grows
    assert 5 in copy.alive


def reference(metric, queries, vectors):
    """hnswlib's distances (squared L2, or 1 - dot of prepared vectors), in float64."""
    queries = prepare(queries, metric).astype(np.float64)
    vectors = prepare(vectors, metric).astype(np.float64)
    if metric == "l2":
        return ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2)
    return 1 - queries @ vectors.T


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_search_hnswlib_cannot_answer_ranks_the_alive_heads_exactly(metric):
    head, vectors = make(metric)
    head.remove(np.arange(1000, 1060))  # deleted elements stay in the graph
    head._index = RefusingSearches(head._index)
    alive = np.arange(1060, 1200)
    queries = np.random.default_rng(5).normal(size=(4, 8)).astype(np.float32)
    truth = reference(metric, queries, vectors[60:])
    for k in (1, 10, len(head) - 1, len(head), len(head) + 1, 10**4):
        labels, distances = head.search(queries, k)
        assert labels.shape == distances.shape == (4, min(k, 140))
        for row in range(4):
            positions = labels[row] - 1060
            assert len(set(labels[row].tolist())) == labels.shape[1] and set(labels[row].tolist()) <= set(alive.tolist())
            np.testing.assert_allclose(distances[row], truth[row][positions], rtol=1e-4, atol=1e-4)
            assert np.all(np.diff(distances[row]) >= -1e-5)  # nearest first
            # The k nearest: none left out is nearer than the farthest returned.
            assert np.sort(truth[row])[labels.shape[1] - 1] >= truth[row][positions].max() - 1e-4
    labels, _, unique, found = head.search_with_vectors(queries, len(head) - 1)
    assert labels.shape == (4, 139) and set(unique.tolist()) <= set(alive.tolist())
    np.testing.assert_allclose(found, prepare(vectors[unique - 1000], metric), atol=1e-2)  # float16 copies


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_asking_for_every_alive_head_returns_them_all_past_deleted_ones(metric):
    head, vectors = make(metric)
    head.remove(np.arange(1000, 1200, 3))
    alive = sorted(head.alive)
    queries = np.random.default_rng(6).normal(size=(8, 8)).astype(np.float32)
    for k in (len(head), len(head) + 1, 10**4):
        labels, _ = head.search(queries, k)
        assert all(sorted(row) == alive for row in labels.tolist())
    assert head.search(queries, len(head) - 1)[0].shape == (8, len(head) - 1)


def test_bad_snapshots_are_refused():
    head, _ = make()
    data = head.to_bytes()
    with pytest.raises(HeadIndexError, match="does not start like a head index"):
        HeadIndex.from_bytes(b"pickle" + data, 8, "l2")
    with pytest.raises(HeadIndexError, match="snapshot has 8 dimensions, expected 9"):
        HeadIndex.from_bytes(data, 9, "l2")
    with pytest.raises(HeadIndexError):
        HeadIndex.from_bytes(data[:200], 8, "l2")


def test_cosine_heads_are_stored_as_unit_vectors():
    head, vectors = make("cosine")
    np.testing.assert_allclose(head.vectors([1000, 1001]), prepare(vectors[:2], "cosine"), rtol=1e-6)


def test_searches_and_additions_from_many_threads():
    head, vectors = make(n=50)
    rng = np.random.default_rng(1)
    errors = []

    def search():
        try:
            for _ in range(300):
                labels, _ = head.search(rng.normal(size=(4, 8)).astype(np.float32), 5)
                assert labels.shape == (4, 5)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def add(offset):
        try:
            for i in range(200):
                head.add(np.array([offset + i]), rng.normal(size=(1, 8)).astype(np.float32))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(3)] + [
        threading.Thread(target=add, args=(10_000 * (i + 1),)) for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(head) == 50 + 400
