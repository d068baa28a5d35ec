"""The calibration's arithmetic, with no database: exact neighbours, reach, the curve, probes for a recall."""

import numpy as np
import pytest

from vectorindex.engine.calibration import Calibration, Neighbours, curve, first_reach, ladder, pairwise


def test_neighbours_over_chunks_are_the_exact_ones_excluding_the_query_itself():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(500, 8)).astype(np.float32)
    ids = np.arange(100, 600)
    chosen = [3, 250, 499]
    found = Neighbours("l2", rows[chosen], ids[chosen], k=5, kept=8)
    for start in range(0, 500, 64):  # in chunks, in the table's order
        found.add(ids[start : start + 64], rows[start : start + 64])
    for query, row in enumerate(chosen):
        distances = np.linalg.norm(rows - rows[row], axis=1)
        distances[row] = np.inf
        nearest = np.argsort(distances)
        # The five nearest are the right answers; the three kept beyond them are farther.
        assert found.answers()[query].tolist() == [*ids[nearest[:5]].tolist(), -1, -1, -1]
        assert found.kth()[query] == pytest.approx(distances[nearest[4]], rel=1e-6)


def test_rows_as_near_as_the_kth_are_right_answers_too():
    """A table of real embeddings holds the same vector twice: either copy is a right answer."""
    rows = np.array([[0, 0], [1, 0], [2, 0], [2, 0], [2, 0], [5, 0]], np.float32)
    found = Neighbours("l2", rows[:1], np.array([10]), k=2)
    found.add(np.arange(10, 16), rows)
    assert found.answers().tolist() == [[11, 12, 13, 14, -1, -1]]  # 12, 13, 14 tie for 2nd; 15 is farther, 10 itself
    depth = np.array([[1, 0, 3, 0, 0, 0]])
    assert curve(depth, found.answers(), [1, 2, 3], k=2) == [(1, 0.5), (2, 0.5), (3, 1.0)]


def test_a_query_with_fewer_rows_than_k_has_gaps():
    rows = np.eye(3, dtype=np.float32)
    found = Neighbours("cosine", rows[:1], np.array([0]), k=4)
    found.add(np.array([0, 1, 2]), rows)
    assert found.answers().tolist() == [[1, 2, -1]]  # itself is no neighbour: a gap
    assert curve(np.array([[2, 5, 0]]), found.answers(), [1, 2, 5], k=4) == [(1, 0.0), (2, 0.5), (5, 1.0)]


def test_pairwise_gives_each_metrics_meaning():
    queries = np.array([[1.0, 0.0]], np.float32)
    rows = np.array([[0.0, 2.0], [3.0, 0.0]], np.float32)
    assert pairwise("l2", queries, rows).round(6).tolist() == [[round(5**0.5, 6), 2.0]]
    assert pairwise("cosine", queries, rows).tolist() == [[1.0, 0.0]]
    assert pairwise("ip", queries, rows).tolist() == [[0.0, -3.0]]


def test_reach_counts_only_probed_heads_and_current_entries():
    truth = np.array([[7, 8, 9]])
    rankings = np.array([[10, 11, 12, 13]])
    probed = np.array([[True, False, True, True]])
    holders = {10: {7}, 11: {8}, 12: {8}, 13: set()}  # 9 is held current nowhere read
    depth = first_reach(rankings, probed, holders, truth)
    assert depth.tolist() == [[1, 3, 0]]  # 8 is in head 11's list, but 11 is cut off: found at 12
    points = curve(depth, truth, [1, 2, 3, 4], k=3)
    assert points == [(1, 1 / 3), (2, 1 / 3), (3, 2 / 3), (4, 2 / 3)]


def test_the_ladder_is_dense_first_and_ends_at_its_top():
    assert ladder(10) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert ladder(1) == [1]
    points = ladder(4096)
    assert points[-1] == 4096 and len(points) < 50 and points == sorted(set(points))


@pytest.mark.parametrize(
    "recall, probes",
    [(0.95, 6), (0.5, 2), (0.9, 4), (0.97, 12), (0.995, 24)],
)
def test_probes_for_a_recall_follow_the_curve_times_the_factor(recall, probes):
    found = Calibration(
        target=0.95, probes=6, recall=0.955, queries=200, vectors=20_000, heads=800, generation=1,
        factor=2.0, curve=[(1, 0.6), (2, 0.9), (3, 0.96), (6, 0.98), (12, 0.99)],
    )
    # At the target, the probes the real queries were measured at; elsewhere the
    # curve's fewest, times 2; beyond the curve, its last point, times 2.
    assert found.probes_for(recall) == probes


def test_a_calibration_survives_the_state_row():
    found = Calibration(0.9, 5, 0.91, 200, 1000, 40, 7, 1.25, [(1, 0.5), (5, 0.93)], "2026-12-03T07:00:00")
    assert Calibration.from_state(found.to_state()) == found
    assert Calibration.from_state({}) is None and Calibration.from_state(None) is None
