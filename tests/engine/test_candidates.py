"""A query's candidates: the pool, validation windows, the best k and their re-rank (numpy only)."""

import numpy as np
import pytest

from vectorindex.engine import candidates
from vectorindex.engine.candidates import Pool
from vectorindex.engine.postings import Payload

PAYLOAD = Payload(2)


def entries(ids, versions=None):
    ids = np.asarray(ids, dtype=np.int64)
    versions = np.ones(len(ids), np.uint32) if versions is None else np.asarray(versions, np.uint32)
    return PAYLOAD.entries(ids, versions, np.stack([ids, -ids], axis=1).astype(np.float32))


def pool_of(*blocks):
    """A pool of one term whose estimate is the vector id (nearest: the smallest id), all passing."""
    pool = Pool.empty(1)
    for block in blocks:
        found = entries(*block) if isinstance(block, tuple) else entries(block)
        pool.add(found, [found["id"].astype(np.float32)], np.ones(len(found), bool))
    return pool


class Versions:
    """resolve(): the current versions, with the lookups made."""

    def __init__(self, current):
        self.current = current
        self.asked = []

    def __call__(self, vector_ids):
        self.asked.append(list(vector_ids))
        return {i: self.current[i] for i in vector_ids if i in self.current}


def exact(pool, distance=lambda ids: ids.astype(np.float64), passes=lambda ids: np.ones(len(ids), bool)):
    """score(): exact distances from the ids, with the positions scored."""
    calls = []

    def score(positions):
        calls.append(positions.tolist())
        ids = pool.ids[positions]
        keep = passes(ids)
        return positions[keep], [distance(ids)[keep]]

    score.calls = calls
    return score


@pytest.mark.parametrize("count", [50, 700, 5000])
def test_candidates_come_in_distance_order_a_window_at_a_time(count):
    rng = np.random.default_rng(count)
    values = rng.integers(0, 300, 6000).astype(np.float32)  # many ties
    ids = rng.permutation(6000)
    chosen = np.sort(rng.choice(6000, count, replace=False))
    windows = list(candidates.in_order(chosen, values, ids, 64))
    order = np.concatenate(windows)
    assert all(len(w) <= 64 for w in windows)
    assert sorted(order.tolist()) == chosen.tolist()  # each once
    keys = list(zip(values[order].tolist(), ids[order].tolist()))
    assert all(a[0] <= b[0] for a, b in zip(keys, keys[1:]))  # by value throughout
    assert keys[:256] == sorted(keys[:256])  # and by id among equals within the first windows


def test_no_candidates_no_window():
    assert list(candidates.in_order(np.empty(0, np.int64), np.empty(0), np.empty(0), 64)) == []


def test_a_window_is_four_times_the_need_and_at_least_64():
    assert [candidates.window(need) for need in (1, 16, 26, 100)] == [64, 64, 104, 400]


def test_union_keeps_each_head_once_in_the_order_first_met():
    rankings = iter([np.array([5, 3, 9]), np.array([3, 7, 5, 1])])
    assert candidates.union(rankings) == [5, 3, 9, 7, 1]
    assert candidates.union(iter([])) == []


def test_the_pool_finds_an_entry_in_whichever_block_it_was_read():
    pool = pool_of([10, 11, 12], [20], [30, 31])
    assert pool.ids.dtype == np.int64 and pool.ids.tolist() == [10, 11, 12, 20, 30, 31]
    assert pool.values[0].tolist() == [10, 11, 12, 20, 30, 31]
    assert pool.entries(np.array([5, 0, 3, 2]))["id"].tolist() == [31, 10, 20, 12]
    assert pool.entries(np.array([4]))["vector"].tolist() == [[30.0, -30.0]]


def test_an_empty_pool_holds_an_empty_column_per_term():
    pool = Pool.empty(3)
    assert len(pool.values) == 3 and not len(pool.ids) and not len(pool.passing)
    assert pool.versions.dtype == np.uint32


def test_valid_entries_are_current_ones_once_per_vector():
    # Vector 2 has a stale copy (version 1) and two current replicas; 4 is deleted; 5 excluded.
    pool = pool_of(([1, 2, 2, 3, 4, 5, 2], [1, 1, 2, 1, 1, 1, 2]))
    versions = Versions({1: 1, 2: 2, 3: 1})
    found = np.concatenate(list(candidates.valid(pool, 0, 1, versions)))
    assert pool.ids[found].tolist() == [1, 2, 3]
    assert pool.versions[found].tolist() == [1, 2, 1]
    assert versions.asked == [[1, 2, 3, 4, 5]]  # one lookup for the window, each vector once
    assert pool.known == {1: 1, 2: 2, 3: 1, 4: -1, 5: -1}


def test_only_vectors_not_known_yet_are_looked_up():
    pool = pool_of(list(range(1, 11)))
    pool.known.update({1: 1, 2: 7})
    versions = Versions({i: 1 for i in range(1, 11)})
    found = np.concatenate(list(candidates.valid(pool, 0, 1, versions)))
    assert versions.asked == [list(range(3, 11))]
    assert 2 not in pool.ids[found].tolist()  # known at another version: stale


def test_entries_that_fail_the_distance_conditions_are_never_looked_up():
    found = entries([1, 2, 3])
    pool = Pool.empty(1)
    pool.add(found, [np.array([1, 2, 3], np.float32)], np.array([True, False, True]))
    versions = Versions({1: 1, 2: 1, 3: 1})
    assert np.concatenate(list(candidates.valid(pool, 0, 1, versions))).tolist() == [0, 2]
    assert versions.asked == [[1, 3]]


def test_lookups_ask_about_a_little_more_than_the_need_then_twice_as_many_each_time():
    pool = pool_of(list(range(1, 201)))
    versions = Versions({i: 1 for i in range(1, 201)})
    walk = candidates.valid(pool, 0, 16, versions)
    first = next(walk)
    assert pool.ids[first].tolist() == list(range(1, 21))  # 1.25 × 16
    assert versions.asked == [list(range(1, 21))]
    rest = list(walk)
    # 40 more, then the rest of the first window of 64 entries (4 × 16): a lookup stays within its window.
    assert [len(lookup) for lookup in versions.asked] == [20, 40, 4, 64, 64, 8]
    assert sum(map(len, rest)) == 180 and len(rest) == len(versions.asked) - 1


def test_replicas_and_known_vectors_do_not_count_towards_a_lookup():
    # 1 and 2 replicated, 3 known: the first lookup of 16 (the least) reads on to 18.
    ids = [1, 1, 2, 2, 3] + list(range(4, 30))
    pool = pool_of(ids)
    pool.known[3] = 1
    versions = Versions({i: 1 for i in range(1, 30)})
    found = next(candidates.valid(pool, 0, 4, versions))
    assert versions.asked == [[1, 2, *range(4, 18)]]
    assert pool.ids[found].tolist() == [1, 2, 3, *range(4, 18)]


def test_the_best_are_ranked_by_their_exact_distances_ties_by_id():
    pool = pool_of(list(range(1, 41)))
    versions = Versions({i: 1 for i in range(1, 41)})
    # The estimates rank by id; the exact distance reverses the first ten and ties 11 and 12.
    distance = lambda ids: np.where(ids <= 10, 11 - ids, np.where(ids <= 12, 11, ids)).astype(np.float64)  # noqa: E731
    score = exact(pool, distance)
    ids, values = candidates.best(pool, 0, 5, 7, versions, score)
    assert score.calls == [list(range(12))]  # need + rerank, in one batch
    assert ids.tolist() == [10, 9, 8, 7, 6]
    assert values[0].tolist() == [1, 2, 3, 4, 5]
    ids, _values = candidates.best(pool, 0, 12, 0, versions, exact(pool, distance))
    assert ids.tolist()[-3:] == [1, 11, 12]  # three at 10, 11 and 11


def test_more_are_scored_while_the_conditions_fail_on_the_exact_values():
    pool = pool_of(list(range(1, 101)))
    versions = Versions({i: 1 for i in range(1, 101)})
    score = exact(pool, passes=lambda ids: ids % 3 == 0)
    ids, values = candidates.best(pool, 0, 4, 2, versions, score)
    assert ids.tolist() == [3, 6, 9, 12]
    # 6 wanted: the first six scored keep two; then four more, one; then three more...
    assert score.calls[0] == [0, 1, 2, 3, 4, 5]
    assert sum(len(call) for call in score.calls) == 18  # until 3, 6, ..., 18 are kept


def test_too_few_valid_entries_is_none_after_scoring_what_there_is():
    pool = pool_of(list(range(1, 8)))
    versions = Versions({i: 1 for i in range(1, 6)})  # 6 and 7 deleted
    score = exact(pool)
    assert candidates.best(pool, 0, 6, 4, versions, score) is None
    assert score.calls == [[0, 1, 2, 3, 4]]
    ids, _values = candidates.best(pool, 0, 5, 4, versions, exact(pool))
    assert ids.tolist() == [1, 2, 3, 4, 5]  # enough for the need, if not for the re-rank


def test_rows_gone_since_their_versions_were_read_are_skipped():
    """A scorer that finds no vector for a position (the row was deleted meanwhile) keeps fewer."""
    pool = pool_of(list(range(1, 21)))
    versions = Versions({i: 1 for i in range(1, 21)})

    def score(positions):
        present = positions[pool.ids[positions] % 2 == 0]
        return present, [pool.ids[present].astype(np.float64)]

    ids, _values = candidates.best(pool, 0, 3, 0, versions, score)
    assert ids.tolist() == [2, 4, 6]


def test_every_term_s_values_come_back_in_the_order_of_the_ranked_term():
    pool = Pool.empty(2)
    found = entries([1, 2, 3, 4])
    pool.add(found, [np.array([1, 2, 3, 4], np.float32), np.array([4, 3, 2, 1], np.float32)], np.ones(4, bool))
    versions = Versions({i: 1 for i in range(1, 5)})

    def score(positions):
        ids = pool.ids[positions].astype(np.float64)
        return positions, [ids * 10, -ids]

    ids, values = candidates.best(pool, 1, 2, 0, versions, score)  # ranked by the second term
    assert ids.tolist() == [4, 3]
    assert [column.tolist() for column in values] == [[40, 30], [-4, -3]]


def test_entries_within_their_error_bound_of_the_kth_exact_distance_are_scored_beyond_the_rerank():
    # A crowd: 40 vectors whose estimates (0.50 to 0.539) are within their bound (0.05) of each
    # other; the exact distances rank them the other way round. Vector 100 is far beyond the bound.
    ids = np.array([*range(1, 41), 100])
    found = entries(ids)
    pool = Pool.empty(1)
    estimates = np.array([0.5 + 0.001 * i for i in range(40)] + [0.9], np.float32)
    pool.add(found, [estimates], np.ones(len(ids), bool), np.full(len(ids), 0.05, np.float32))
    versions = Versions({i: 1 for i in ids.tolist()})
    crowd = lambda ids: np.where(ids <= 40, 0.55 - ids / 1000, 0.95)  # noqa: E731  (each within 0.05 of its estimate)
    score = exact(pool, distance=crowd)
    best_ids, values = candidates.best(pool, 0, 3, 1, versions, score)
    assert best_ids.tolist() == [40, 39, 38]
    assert sorted(i for call in score.calls for i in pool.ids[call].tolist()) == list(range(1, 41))
    assert len(versions.asked) == 1  # the first lookup already asked about every vector the bounds reach
    # Without bounds, the re-rank alone: the best of the 4 best estimates.
    pool.errors = None
    alone = candidates.best(pool, 0, 3, 1, Versions({i: 1 for i in ids.tolist()}), exact(pool, crowd))
    assert alone[0].tolist() == [4, 3, 2]
