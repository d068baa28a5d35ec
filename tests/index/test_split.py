"""Split (vectorindex.index.maintenance.splitting): a list over its limit becomes balanced lists around vectors of its own."""


import numpy as np
import pytest

from tests.index.streamed import INDEX, all_found, crowd_one_head, declared, sizes
from tests.indexing import RefusingSearches, build, check, clustered, recall
from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.index import maintenance
from vectorindex.index.runtime import runtime
from vectorindex.models import Head, Posting, WalEntry


def test_split_replaces_an_oversized_list_with_balanced_ones(small):
    target = crowd_one_head()
    assert sizes()[target] > 64
    outcome = maintenance.split(declared(), target)
    assert "into" in outcome.detail and outcome.follow_up[0][0] == "reassign"
    assert not Head.objects.get(pk=target).alive
    assert Posting.objects.filter(head_id=target).exists()  # kept for the grace period
    now = sizes()
    children = outcome.follow_up[0][1]["new_head_ids"]
    assert target not in now and len(children) >= 2
    assert all(now[h] <= 64 for h in children)
    assert WalEntry.objects.filter(op=WalEntry.Op.REMOVE, head_id=target).exists()
    assert maintenance.split(declared(), target).detail.endswith("retired already")  # idempotent
    name, arguments = outcome.follow_up[0]
    maintenance.run(name, declared(), **arguments)
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()


def test_split_heads_are_vectors_of_the_list_not_centroids(small):
    target = crowd_one_head(200, seed=3)
    entries = runtime(declared(), "default").open()[0].read_postings([target])
    children = maintenance.split(declared(), target).follow_up[0][1]["new_head_ids"]
    storage, _ = runtime(declared(), "default").open()
    owners, placed = storage.read_postings_with_owners(children)
    assert sorted(set(placed["id"].tolist())) == sorted(set(entries["id"].tolist()))
    for child, vector in zip(children, storage.head_vectors(children)):
        # Each new head is one of the vectors its own list holds.
        assert (storage.payload.vectors(placed[owners == child]) == vector).all(axis=1).any()


def test_probes_of_every_alive_head_after_a_split_give_the_exact_answer(small, monkeypatch):
    """approximate(probes=N) with N at or past the alive heads reads every list
    (no ε cut-off), also where hnswlib, holding retired heads, cannot return
    that many; one fewer is a normal approximate query."""
    outcome = maintenance.split(declared(), crowd_one_head())
    name, arguments = outcome.follow_up[0]
    maintenance.run(name, declared(), **arguments)
    # A merge retires a head and adds none: its element stays in hnswlib's
    # graph (the split's new heads took the slot of the one it retired).
    smallest = min(sizes(), key=sizes().get)
    storage, _ = runtime(declared(), "default").open()
    Streamed.objects.filter(pk__in=storage.read_postings([smallest])["id"].tolist()[1:]).delete()
    assert "moved" in maintenance.merge(declared(), smallest).detail
    rt = runtime(declared(), "default")
    head = rt.current(*rt.open())
    assert len(head.labels()) > len(head)  # the retired head is still in hnswlib's graph
    alive = len(head)
    # Heads' own vectors: the (1 + ε) rule keeps only the head itself. Not the
    # split's: in the crowd its rows are nearer each other than the int8
    # payload's estimates can rank, a matter of rerank, not of probing.
    queries = head.vectors(np.array(sorted(head.alive - set(arguments["new_head_ids"]))))

    def answers(probes):
        search = Streamed.objects.approximate(probes=probes)
        return [[p.pk for p in search.order_by(L2Distance("embedding", q))[:10]] for q in queries]

    truth = [[p.pk for p in Streamed.objects.exact().order_by(L2Distance("embedding", q))[:10]] for q in queries]
    for refusing in (False, True):
        if refusing:
            monkeypatch.setattr(head, "_index", RefusingSearches(head._index))
        for probes in (alive, alive + 1, 10**4):
            assert answers(probes) == truth, (refusing, probes)
        fewer = answers(alive - 1)
        assert all(len(rows) == 10 for rows in fewer) and recall(fewer, truth) >= 0.7
    assert rt.current(*rt.open()) is head  # the searches above were all on the refusing copy


@pytest.mark.django_db(transaction=True)
def test_a_list_of_one_repeated_vector_is_split_inline_and_stops():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(200, seed=5))
    build(INDEX)
    Streamed.objects.bulk_create(Streamed(embedding=np.full(16, 0.5, dtype=np.float32)) for _ in range(300))
    assert max(sizes().values()) <= 64
    assert "streamed_embedding: ok" in check(INDEX)
    assert all(name != "split" for name, _ in maintenance.scan(declared()))


def test_a_list_of_mostly_stale_entries_is_cleaned_not_split(small):
    target = crowd_one_head(100)
    Streamed.objects.filter(pk__in=list(Streamed.objects.order_by("-pk").values_list("pk", flat=True)[:90])).delete()
    outcome = maintenance.split(declared(), target)
    assert "within the limit after dropping" in outcome.detail
    assert Head.objects.get(pk=target).alive and sizes()[target] <= 64
    assert "streamed_embedding: ok" in check(INDEX)
