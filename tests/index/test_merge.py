"""Merge and defragment (vectorindex.index.maintenance.merging)."""


import numpy as np

from tests.index.streamed import INDEX, all_found, crowd_one_head, declared, sizes
from tests.indexing import check
from tests.testapp.models import Streamed
from vectorindex.index import maintenance
from vectorindex.index.runtime import runtime
from vectorindex.models import Head, Posting


def test_merge_and_defragment(small):
    storage, _ = runtime(declared(), "default").open()
    smallest = min(sizes(), key=sizes().get)
    members = [pk for pk, in Streamed.objects.values_list("pk")]
    # Empty that list by deleting its vectors, then merge it away.
    entries = storage.read_postings([smallest])
    Streamed.objects.filter(pk__in=entries["id"].tolist()[1:]).delete()
    outcome = maintenance.merge(declared(), smallest)
    assert "moved to other heads" in outcome.detail and not Head.objects.get(pk=smallest).alive
    assert "streamed_embedding: ok" in check(INDEX)
    # Many single-row saves make a list of many rows; defragment packs it.
    target = crowd_one_head(0)
    centre = runtime(declared(), "default").current(*runtime(declared(), "default").open()).vectors(np.array([target]))[0]
    for i in range(12):
        Streamed.objects.create(embedding=centre + 0.01 * (i + 1))  # not the head row's own vector
    rows_before = Posting.objects.filter(head_id=target).count()
    assert rows_before > 8
    # Asked for by a trigger whose threshold the list does not pass: left alone.
    outcome = maintenance.defragment(declared(), target, above_rows=rows_before)
    assert outcome.detail == f"head {target}: {rows_before} rows, packed already"
    assert Posting.objects.filter(head_id=target).count() == rows_before
    maintenance.defragment(declared(), target, above_rows=8)
    assert Posting.objects.filter(head_id=target).count() == 1
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
    del members


def test_defragment_of_a_list_over_the_limit_asks_for_its_split(small, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the split the crossing asked for is lost
    target = crowd_one_head(100)
    outcome = maintenance.defragment(declared(), target)
    assert sizes()[target] > 64
    assert outcome.follow_up == [("split", {"head_id": target})]
    assert maintenance.defragment(declared(), min(h for h in sizes() if h != target)).follow_up == []
