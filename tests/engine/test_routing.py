"""Assignment by SPANN's rules, probing, and posting payloads."""

import numpy as np
import pytest

from vectorindex.engine import postings, routing
from vectorindex.engine.head import HeadIndex


@pytest.fixture
def heads():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(100, 8)) * 5
    head = HeadIndex(8, "l2", capacity=100)
    head.add(np.arange(100), centers.astype(np.float32))
    return head, centers


def test_every_vector_goes_to_its_nearest_head_first(heads):
    head, centers = heads
    vectors = (centers[np.arange(300) % 100] + np.random.default_rng(1).normal(size=(300, 8))).astype(np.float32)
    rows, owners = routing.assign(head, vectors, replicas=1, epsilon=0.0)
    assert rows.tolist() == list(range(300))
    nearest = np.argmin(((vectors[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    assert (owners == nearest).mean() > 0.99  # HNSW is approximate too


def test_replicas_are_bounded_and_follow_the_rules(heads):
    head, centers = heads
    vectors = np.random.default_rng(2).normal(size=(500, 8)).astype(np.float32) * 5
    rows, owners = routing.assign(head, vectors, replicas=3, epsilon=1.0)
    counts = np.bincount(rows, minlength=500)
    assert counts.min() >= 1 and counts.max() <= 3
    assert len(set(zip(rows.tolist(), owners.tolist()))) == len(rows)  # no head twice
    # A closure of 0 admits only heads exactly as near as the nearest one.
    rows0, _ = routing.assign(head, vectors, replicas=3, epsilon=0.0)
    assert np.bincount(rows0, minlength=500).max() == 1
    # RNG rule: a second head is kept only if no chosen head is nearer to it than x is.
    for row in range(50):
        chosen = owners[rows == row]
        x = vectors[row].astype(np.float64)
        for j, later in enumerate(chosen[1:], start=1):
            for earlier in chosen[:j]:
                between = ((centers[later] - centers[earlier]) ** 2).sum()
                assert between >= ((x - centers[later]) ** 2).sum() - 1e-3


def test_probe_keeps_heads_within_epsilon(heads):
    head, centers = heads
    query = centers[0].astype(np.float32)
    assert routing.probe(head, query, 10, 0.0).tolist() == [0]
    assert len(routing.probe(head, query + 0.5, 10, 1000.0)) == 10


def test_posting_payloads_round_trip_and_are_capped():
    rng = np.random.default_rng(3)
    ids = np.arange(5000, dtype=np.int64) * 7
    versions = rng.integers(1, 2**32 - 1, 5000).astype(np.uint32)
    vectors = rng.normal(size=(5000, 384)).astype(np.float32)
    rows = list(postings.pack(ids, versions, vectors))
    assert all(len(payload) <= postings.ROW_BYTES for _, payload in rows)
    assert sum(count for count, _ in rows) == 5000 and len(rows) == 8  # 677 entries of 1,548 bytes per MiB
    entries = postings.decode([payload for _, payload in rows], 384)
    assert np.array_equal(entries["id"], ids)
    assert np.array_equal(entries["version"], versions)
    assert np.array_equal(entries["vector"], vectors)
    assert postings.entry_dtype(384).itemsize == 12 + 4 * 384
    with pytest.raises(ValueError, match="not a whole number of 1548-byte entries"):
        postings.decode([rows[0][1][:-1]], 384)
