"""The head index: hnswlib behind a lock, with its own serialisation."""

import json
import subprocess
import threading

import numpy as np
import pytest

from tests.damage import CRAFTED, Layout, fuzzed
from tests.engine import load_heads
from tests.engine.fakes import RefusingSearches
from vectorindex.engine.head import HeadIndex, prepare
from vectorindex.engine.snapshot import unpack
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


def test_what_to_bytes_writes_passes_the_check():
    head, vectors = make(n=300)
    head.remove(np.arange(1000, 1300, 3))
    alive, _graph, saved = unpack(head.to_bytes(), 8)
    assert set(alive.tolist()) == head.alive and saved.count == 300 and saved.deleted.sum() == 100
    empty = HeadIndex(8, "l2")
    assert len(HeadIndex.from_bytes(empty.to_bytes(), 8, "l2")) == 0
    grown = HeadIndex.from_bytes(head.to_bytes(), 8, "l2")
    grown.add(np.arange(5000, 7000), np.repeat(vectors, 7, axis=0)[:2000])  # past the loaded capacity
    assert HeadIndex.from_bytes(grown.to_bytes(), 8, "l2").alive == grown.alive


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_snapshots_are_refused_before_hnswlib_reads_them(name):
    """Bytes that would make hnswlib read outside its buffers, or hold a graph
    that is not ours, are named and refused; hnswlib never sees them."""
    head, _ = make()
    data = head.to_bytes()
    assert Layout.of(data).header["max_level"] >= 1  # upper levels to damage
    mutate, message = CRAFTED[name]
    with pytest.raises(HeadIndexError, match=message):
        unpack(mutate(data), 8)
    with pytest.raises(HeadIndexError, match=message):
        HeadIndex.from_bytes(mutate(data), 8, "l2")


def test_damaged_bytes_never_kill_the_process_that_loads_them(tmp_path):
    """Hundreds of random flips and cuts of a real snapshot, loaded, searched and
    grown in another process: each loads or is refused, none kills it."""
    head, _ = make(n=300)
    head.remove(np.arange(1000, 1030))
    data = head.to_bytes()
    blobs = fuzzed(data, 400, seed=3) + [mutate(data) for mutate, _message in CRAFTED.values()]
    path = tmp_path / "snapshots"
    path.write_bytes(b"".join(len(blob).to_bytes(8, "little") + blob for blob in blobs))
    process = load_heads.start(str(path), 8)
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    last = out.strip().splitlines()[-1] if out.strip() else "nothing"
    assert process.returncode == 0, f"exit {process.returncode} after {last!r}: {err[-2000:]}"
    report = json.loads(last)
    assert report["other"] == []
    assert report["loaded"] + report["refused"] == len(blobs)
    assert report["refused"] >= len(CRAFTED) and report["loaded"] >= 20  # flips in vectors load


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


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_view_routes_as_the_head_index_stood_at_an_older_lsn(metric):
    from vectorindex.engine.headview import HeadView

    head, vectors = make(metric)
    head.lsn = head.history_from = 10
    rng = np.random.default_rng(1)
    added = rng.normal(size=(5, 8)).astype(np.float32)
    # WAL 11..15 add heads 1..5; 16..25 remove heads 1000..1009; 26 removes head 1 again.
    for lsn, head_id in enumerate(range(1, 6), start=11):
        head.record(lsn, True, head_id)
    head.add(np.arange(1, 6), added)
    for lsn, head_id in enumerate(range(1000, 1010), start=16):
        head.record(lsn, False, head_id)
    head.remove(np.arange(1000, 1010))
    head.record(26, False, 1)
    head.remove(np.array([1]))
    head.lsn = 26

    assert head.changes_since(26) == (set(), set())
    assert head.changes_since(9) is None  # before what this copy knows
    hidden, restored = head.changes_since(10)
    assert hidden == {2, 3, 4, 5} and restored == set(range(1000, 1010))
    view = HeadView(head, 10, hidden, np.array(sorted(restored)), vectors[:10])
    assert len(view) == 200 and sorted(view.ids().tolist()) == list(range(1000, 1200))

    then, _ = make(metric)  # the heads at LSN 10
    queries = np.concatenate([vectors[:10] + 0.01, added])
    labels, distances = view.search(queries, 5, ef=200)
    expected, expected_distances = then.search(queries, 5, ef=200)
    assert labels.tolist() == expected.tolist()
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-5)
    hidden, restored = head.changes_since(20)  # 2..5 were there by then; 1000..1004 gone, 1005..1009 and 1 not
    assert hidden == set() and restored == {1, *range(1005, 1010)}


def test_retired_heads_give_their_slots_to_new_ones():
    head, vectors = make("l2", n=100)
    for round_ in range(10):  # ten rounds of retiring 30 heads and adding 30
        alive = sorted(head.alive)
        head.remove(np.array(alive[:30]))
        head.add(np.arange(30) + 10_000 * (round_ + 1), vectors[:30] + round_)
    assert len(head) == 100 and head.elements == 100
    copy = HeadIndex.from_bytes(head.to_bytes(), 8, "l2")
    copy.remove(np.array(sorted(copy.alive)[:5]))
    copy.add(np.arange(5) + 99_000, vectors[:5])  # a loaded index reuses slots too
    assert copy.elements == 100


def test_a_head_index_takes_the_history_only_of_one_at_its_own_lsn():
    older, newer = HeadIndex(4, "l2"), HeadIndex(4, "l2")
    older.add(np.array([1, 2]), np.eye(4, dtype=np.float32)[:2])
    older.lsn = newer.lsn = 6
    for lsn, added, head_id in [(5, True, 2), (6, False, 3)]:
        older.record(lsn, added, head_id)
    newer.add(np.array([1, 2]), np.eye(4, dtype=np.float32)[:2])
    assert newer.changes_since(4) is None
    newer.take_history(older)
    assert newer.changes_since(4) == ({2}, {3}) == older.changes_since(4)
    newer.lsn = 7
    with pytest.raises(HeadIndexError, match="a head index at LSN 7 cannot take the history of one at LSN 6"):
        newer.take_history(older)


def test_a_head_id_the_graph_holds_is_refused_and_the_graph_is_unchanged():
    """hnswlib's replace_deleted path would put it in a retired head's slot and leave its old element under the same label."""
    head, vectors = make()
    head.remove(np.arange(1000, 1010))  # their slots stay in the graph until new heads take them
    loaded = HeadIndex.from_bytes(head.to_bytes(), 8, "l2")
    for index in (head, loaded):
        for ids in ([1005], [1100], [1300, 1100]):  # retired, alive, one of a batch
            with pytest.raises(HeadIndexError, match=rf"heads \[{ids[-1]}\] are already in the head index; a head id is added once"):
                index.add(np.array(ids), vectors[: len(ids)])
        with pytest.raises(HeadIndexError, match=r"heads \[1400\] are given twice"):
            index.add(np.array([1400, 1400]), vectors[:2])
        assert len(index) == 190 and index.elements == 200
        assert sorted(index.labels()) == list(range(1000, 1200))
    head.add(np.arange(1200, 1210), vectors[:10])  # new ids take the retired heads' slots
    assert head.elements == 200 and head.labels() == set(range(1010, 1210))
    head.add(np.array([1005]), vectors[5:6])  # its slot was taken: a new element again
    assert head.search(vectors[5:6], 1)[0][0, 0] in (1005, 1205)
