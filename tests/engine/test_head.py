"""The head index: hnswlib behind a lock, with its own serialisation."""

import json
import subprocess
import threading

import numpy as np
import pytest

from tests.damage import CRAFTED, Layout, fuzzed
from tests.indexing import worker
from vectorindex.engine.head import HeadIndex, prepare, unpack
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
    process = worker("heads", str(path), "8")
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
