"""Posting entries: how int4 packs two codes a byte (the formats' other tests are in test_routing)."""

import numpy as np
import pytest

from vectorindex.engine.postings import Payload


@pytest.mark.parametrize("dimensions", [1, 7, 16, 33])
def test_int4_packs_dimension_j_and_j_plus_half_into_byte_j(dimensions):
    half = (dimensions + 1) // 2
    vectors = np.random.default_rng(dimensions).normal(size=(50, dimensions)).astype(np.float32)
    payload = Payload.fit("int4", vectors)
    entries = payload.entries(np.arange(50), np.ones(50, np.uint32), vectors)
    assert payload.dtype.itemsize == 8 + 4 + 12 + half
    codes = np.concatenate([entries["vector"] & 15, entries["vector"] >> 4], axis=1)
    assert (codes[:, dimensions:] == 0).all()  # an odd last byte's high half is unused
    decoded = (codes[:, :dimensions] - 7.5) * entries["step"][:, None] + entries["offset"][:, None] + payload.center
    assert np.allclose(decoded, payload.vectors(entries), atol=1e-5)
    steps = np.ptp(vectors - payload.center, axis=1) / 15
    assert (np.abs(decoded - vectors) <= steps[:, None] / 2 + 1e-5).all()  # half a level, per vector
    query = np.random.default_rng(99).normal(size=dimensions).astype(np.float32)
    assert np.allclose(payload.estimate(entries, "ip", query), -(decoded @ query), atol=1e-4)


@pytest.mark.parametrize("format", ["float32", "float16", "int8", "int4"])
def test_fingerprints_of_no_entries_are_none(format):
    vectors = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
    payload = Payload.fit(format, vectors)
    none = payload.entries(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 16), np.float32))
    assert payload.fingerprints(none).shape == (0,)
    some = payload.entries(np.arange(3), np.ones(3, np.int64), vectors[:3])
    again = payload.entries(np.arange(3) + 7, np.full(3, 4), vectors[:3])
    assert (payload.fingerprints(some) == payload.fingerprints(again)).all()  # ids and versions left out
    assert len(set(payload.fingerprints(some).tolist())) == 3


def test_rows_by_head_give_each_head_its_members_entries_in_head_order():
    from vectorindex.engine.postings import by_head, rows_by_head

    vectors = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    payload = Payload.fit("float32", vectors)
    entries = payload.entries(np.arange(10, 16), np.arange(1, 7), vectors)
    members = np.array([0, 1, 2, 3, 4, 5, 0, 3])  # rows 0 and 3 in two heads each
    owners = np.array([9, 4, 9, 7, 4, 9, 4, 4])
    assert [(head, rows.tolist()) for head, rows in by_head(members, owners)] == [(4, [1, 4, 0, 3]), (7, [3]), (9, [0, 2, 5])]
    rows = rows_by_head(payload, entries, members, owners)
    assert [(head, count) for head, count, _data in rows] == [(4, 4), (7, 1), (9, 3)]
    decoded = {head: payload.decode([data]) for head, _count, data in rows}
    assert decoded[4]["id"].tolist() == [11, 14, 10, 13] and decoded[9]["version"].tolist() == [1, 3, 6]
    assert np.array_equal(decoded[7]["vector"], vectors[3:4])
    assert list(by_head(np.empty(0, np.int64), np.empty(0, np.int64))) == [] and rows_by_head(payload, entries, members[:0], owners[:0]) == []


@pytest.mark.parametrize("format", ["int8", "int4"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
@pytest.mark.parametrize("dimensions", [4, 16, 384])
def test_an_estimate_is_within_its_error_bound_of_the_exact_distance(format, metric, dimensions):
    from vectorindex.engine.distances import distances

    rng = np.random.default_rng(dimensions)
    vectors = (rng.normal(size=(2000, dimensions)) * rng.uniform(0.1, 3, size=(2000, 1))).astype(np.float32)
    payload = Payload.fit(format, vectors)
    entries = payload.entries(np.arange(2000), np.ones(2000, np.uint32), vectors)
    for query in rng.normal(size=(20, dimensions)).astype(np.float32):
        error = np.abs(payload.estimate(entries, metric, query) - distances(metric, vectors, query))
        bound = payload.error_bound(entries, metric, query)
        assert (error <= bound).all()
        # And no wider than it need be: the largest error is a good part of the bound.
        assert error.max() > 0.1 * np.median(bound)


@pytest.mark.parametrize("format", ["float32", "float16"])
def test_entries_that_keep_their_values_have_no_error_bound(format):
    payload = Payload.fit(format, np.ones((3, 8), np.float32))
    entries = payload.entries(np.arange(3), np.ones(3, np.uint32), np.ones((3, 8), np.float32))
    assert payload.error_bound(entries, "l2", np.ones(8, np.float32)) is None
