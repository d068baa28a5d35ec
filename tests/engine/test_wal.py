"""Replaying WAL entries onto a head index: in order, without a gap, each change remembered (numpy and hnswlib only)."""

import numpy as np

from vectorindex.engine import codec, wal
from vectorindex.engine.head import HeadIndex

D = 4


def vector(head_id):
    return np.full(D, float(head_id), np.float32)


def head_at(lsn, alive=(1, 2, 3)):
    head = HeadIndex(D, "l2", capacity=16)
    head.add(np.array(alive), np.stack([vector(h) for h in alive]))
    head.lsn = lsn
    return head


def add(lsn, head_id):
    return (lsn, wal.ADD, head_id, codec.to_bytes(vector(head_id)))


def remove(lsn, head_id):
    return (lsn, wal.REMOVE, head_id, None)


def test_entries_after_the_head_s_lsn_are_applied_in_order():
    head = head_at(10)
    entries = [add(11, 4), remove(12, 1), add(13, 5), remove(14, 4)]
    assert wal.replay(head, entries, 14)
    assert head.alive == {2, 3, 5} and head.lsn == 14
    labels, _ = head.search(vector(5), 1)
    assert labels.tolist() == [[5]]
    np.testing.assert_array_equal(head.vectors([5]), [vector(5)])


def test_each_change_is_remembered_for_a_view_as_of_an_older_lsn():
    head = head_at(10)
    assert wal.replay(head, [add(11, 4), remove(12, 1), add(13, 5)])
    assert head.history_from == 10
    assert list(head.history) == [(11, True, 4), (12, False, 1), (13, True, 5)]
    assert head.changes_since(10) == ({4, 5}, {1})
    assert head.changes_since(12) == ({5}, set())


def test_a_gap_after_the_head_s_lsn_applies_nothing():
    """The entry after the head's LSN was compacted away: the snapshot must be loaded instead."""
    head = head_at(10)
    assert not wal.replay(head, [add(12, 4), add(13, 5)])
    assert head.alive == {1, 2, 3} and head.lsn == 10 and head.history_from is None


def test_entries_that_do_not_reach_the_lsn_asked_for_apply_nothing():
    head = head_at(10)
    assert not wal.replay(head, [add(11, 4)], lsn=12)
    assert head.alive == {1, 2, 3} and head.lsn == 10


def test_no_entries_is_up_to_date_if_the_head_reaches_the_lsn():
    head = head_at(10)
    assert wal.replay(head, [], 10) and wal.replay(head, [], 3)
    assert not wal.replay(head, [], 11)
    assert head.lsn == 10 and head.alive == {1, 2, 3}


def test_applying_an_entry_again_is_harmless():
    """A head index rebuilt from the heads table already holds what the WAL after its LSN adds or retires."""
    head = head_at(10, alive=(1, 2, 3, 4))  # 4 added at LSN 11 and 1 retired at 12, both already read
    head.remove(np.array([1]))
    # Adding 4 a second time would raise HeadIndexError (a head id is added once).
    assert wal.replay(head, [add(11, 4), remove(12, 1), add(13, 5)])
    assert head.alive == {2, 3, 4, 5} and head.lsn == 13


def test_an_entry_of_no_known_op_only_moves_the_lsn():
    head = head_at(10)
    assert wal.replay(head, [(11, 9, 2, None)])
    assert head.alive == {1, 2, 3} and head.lsn == 11
    assert list(head.history) == [(11, False, 2)]


def test_continues_says_what_replay_would_do():
    head = head_at(5)
    assert wal.continues(head, [add(6, 7)], 6)
    assert not wal.continues(head, [add(7, 7)], 7)
    assert not wal.continues(head, [add(6, 7)], 8)
