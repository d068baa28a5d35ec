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


def test_probe_keeps_heads_within_epsilon_past_the_nearest_few(heads):
    head, centers = heads
    query = centers[0].astype(np.float32) + 0.5
    nearest = np.argsort(((centers - query) ** 2).sum(axis=1))
    floor = routing.MIN_PROBED
    # ε 0 keeps the nearest head alone, but a query reads its nearest few lists whatever the cut-off.
    assert routing.probe(head, query, 20, 0.0).tolist() == nearest[:floor].tolist()
    assert routing.probe(head, query, 3, 0.0).tolist() == nearest[:3].tolist()  # never more than asked for
    assert len(routing.probe(head, query, 20, 1000.0)) == 20


def test_a_row_beside_a_new_head_is_still_read_in_its_own_further_list(heads):
    """A split may put a head right beside a vector whose list, further off, no reassign read: the nearest few
    lists are read whatever the (1 + ε) cut-off, so that a query for the vector still reads the list holding it."""
    head, centers = heads
    vector = centers[5].astype(np.float32) + 0.01  # a head a split put beside it: the nearest, at 0.01
    order = np.argsort(((centers - vector) ** 2).sum(axis=1))
    holder = int(order[3])  # where it was routed before that head came, far beyond 3 × 0.01
    labels, probed = routing.probe_many(head, vector[None, :], 16, 2.0)
    assert holder in labels[0][probed[0]].tolist()
    members, owners = routing.reach(head, vector[None, :], np.array([0]), np.array([holder]), 16, 2.0)
    assert owners.tolist() == [holder]  # reachable as it is: no list added for it


def test_a_query_for_a_heads_own_vector_reads_its_neighbours_lists_too(heads):
    """Scaled by the head at distance 0, the cut-off would keep that head's list alone ("more like this row")."""
    head, centers = heads
    distances = np.sqrt(((centers - centers[0]) ** 2).sum(axis=1))
    apart = np.sort(distances)[1]  # the nearest other head
    nearest = np.argsort(distances)[: routing.MIN_PROBED].tolist()
    for epsilon in (0.0, 0.5, 2.0):
        probed = routing.probe(head, centers[0].astype(np.float32), 100 - 1, epsilon)
        assert probed[0] == 0
        within = np.flatnonzero(distances <= apart * (1 + epsilon) + 1e-6).tolist()
        assert sorted(probed.tolist()) == sorted(set(within) | set(nearest))
        assert len(within) >= 2


def test_probing_every_head_reads_every_list_whatever_epsilon(heads):
    head, centers = heads
    head.remove(np.arange(0, 100, 4))  # retired heads stay in hnswlib's graph
    query = centers[1].astype(np.float32)  # a head's own vector: ε 0 keeps the nearest few alone
    assert routing.probe(head, query, 74, 0.0)[0] == 1 and len(routing.probe(head, query, 74, 0.0)) == routing.MIN_PROBED
    for count in (75, 76, 10**4):
        probed = routing.probe(head, query, count, 0.0)
        assert probed[0] == 1 and sorted(probed.tolist()) == sorted(head.alive)


def test_posting_payloads_round_trip_and_are_capped():
    rng = np.random.default_rng(3)
    ids = np.arange(5000, dtype=np.int64) * 7
    versions = rng.integers(1, 2**32 - 1, 5000).astype(np.uint32)
    vectors = rng.normal(size=(5000, 384)).astype(np.float32)
    payload = postings.Payload(384)
    rows = list(payload.pack(ids, versions, vectors))
    assert all(len(data) <= postings.ROW_BYTES for _, data in rows)
    assert sum(count for count, _ in rows) == 5000 and len(rows) == 8  # 677 entries of 1,548 bytes per MiB
    entries = payload.decode([data for _, data in rows])
    assert np.array_equal(entries["id"], ids)
    assert np.array_equal(entries["version"], versions)
    assert np.array_equal(payload.vectors(entries), vectors)
    assert payload.dtype.itemsize == 12 + 4 * 384
    with pytest.raises(ValueError, match="not a whole number of 1548-byte entries"):
        payload.decode([rows[0][1][:-1]])


@pytest.mark.parametrize(
    ("format", "itemsize", "error"),
    [("float16", 12 + 2 * 384, 2e-3), ("int8", 24 + 384, None), ("int4", 24 + 192, None)],
)
def test_smaller_payloads_store_vectors_approximately(format, itemsize, error):
    rng = np.random.default_rng(4)
    vectors = rng.normal(scale=0.1, size=(2000, 384)).astype(np.float32)
    payload = postings.Payload.fit(format, vectors)
    assert payload.lossy and payload.dtype.itemsize == itemsize
    entries = payload.decode([data for _, data in payload.pack(np.arange(2000), np.ones(2000, np.uint32), vectors)])
    decoded = payload.vectors(entries)
    assert decoded.dtype == np.float32 and decoded.shape == vectors.shape
    if format in ("int8", "int4"):
        worst = np.abs(decoded - vectors).max(axis=1)
        assert np.all(worst <= entries["step"] / 2 + 1e-6)  # half a level, per vector
    else:
        assert np.abs(decoded - vectors).max() < error
    # Stored again as decoded, a vector keeps its codes: no drift.
    again = payload.entries(entries["id"], entries["version"], decoded)
    assert np.array_equal(again["vector"], entries["vector"])
    assert np.allclose(payload.vectors(again), decoded, rtol=0, atol=1e-6)
    # What the state row records gives back the same layout.
    restored = postings.Payload.from_state(384, payload.to_state())
    assert b"".join(data for _, data in restored.pack_entries(entries)) == entries.tobytes()
    assert np.array_equal(restored.vectors(entries), decoded)


@pytest.mark.parametrize("format", ["float32", "float16", "int8", "int4"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
def test_estimated_distances_are_close_to_exact_ones(format, metric):
    from vectorindex.engine import distances

    rng = np.random.default_rng(5)
    vectors = rng.normal(scale=0.1, size=(500, 384)).astype(np.float32)
    query = rng.normal(scale=0.1, size=384).astype(np.float32)
    payload = postings.Payload.fit(format, vectors)
    entries = payload.entries(np.arange(500), np.ones(500, np.uint32), vectors)
    estimated = payload.estimate(entries, metric, query)
    exact = distances.distances(metric, vectors, query)
    spread = np.ptp(exact)
    # float32 arithmetic alone, or the payload's rounding too: far below the spread that ranks them.
    tolerance = {"float32": 1e-5, "int4": 0.1}.get(format, 0.02)
    assert np.abs(estimated - exact).max() < tolerance * spread
    if format in ("int8", "int4") and metric != "l1":  # computed on the codes: the decoded vectors' distances
        assert np.allclose(estimated, distances.distances(metric, payload.vectors(entries), query), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("format", ["int8", "int4"])
def test_int8_and_int4_keep_vectors_far_outside_what_the_build_saw(format):
    payload = postings.Payload.fit(format, np.array([[0.0, -1.0], [1.0, 1.0]], np.float32))
    written_later = np.array([[2.0, -3.0], [1e30, -1e30], [-3e38, 3e38], [7.0, 7.0]], np.float32)
    entries = payload.entries(np.arange(4), np.ones(4, np.uint32), written_later)
    decoded = payload.vectors(entries)
    assert np.allclose(decoded, written_later, rtol=1e-6)  # two values each: both ends of a range
    assert np.isfinite(payload.estimate(entries, "cosine", np.array([1.0, 0.5], np.float32))).all()
    with pytest.raises(ValueError, match="unknown payload format 'bfloat16'"):
        postings.Payload(2, "bfloat16")


def test_float16_clips_what_it_cannot_hold_to_its_largest_value():
    payload = postings.Payload.fit("float16", np.zeros((1, 2), np.float32))
    entries = payload.entries(np.arange(1), np.ones(1, np.uint32), np.array([[1e6, -1e6]], np.float32))
    assert payload.vectors(entries).tolist() == [[65504.0, -65504.0]]
    assert np.isfinite(payload.estimate(entries, "l2", np.zeros(2, np.float32))).all()


def test_int8_state_of_the_earlier_layout_asks_for_a_rebuild():
    from vectorindex.exceptions import IndexNeedsRebuild

    with pytest.raises(IndexNeedsRebuild, match="run `manage.py vectorindex build`"):
        postings.Payload.from_state(2, {"format": "int8", "low": [0, 0], "step": [1, 1]})
