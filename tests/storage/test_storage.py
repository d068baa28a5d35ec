"""Storage: the index's tables, through one connection."""

import re

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import Point
from vectorindex.models import Posting


@pytest.mark.django_db
def test_a_long_append_is_cut_into_statements_and_every_row_lands(point_storage, monkeypatch):
    from vectorindex.storage.dialects import mysql

    store = point_storage
    monkeypatch.setattr(mysql, "APPEND_STATEMENT_BYTES", 1000)
    rng = np.random.default_rng(0)
    rows = [(1_000_000 + i // 3, 1, bytes(rng.integers(0, 256, 300, dtype=np.uint8))) for i in range(9)]
    with CaptureQueriesContext(connection) as captured:
        store.append(rows)
    inserts = [q for q in captured.captured_queries if q["sql"].startswith(f"INSERT INTO {store.posting_table}")]
    if connection.vendor == "mysql":
        assert len(inserts) == 5  # two rows of 600 hex digits reach 1,000 characters
    stored = Posting.objects.filter(index_id=store.index_id, head_id__gte=1_000_000).order_by("head_id", "seq")
    assert [(p.head_id, p.count, bytes(p.payload)) for p in stored] == rows


@pytest.mark.django_db
def test_the_rows_of_as_many_heads_as_a_view_asks_for_are_read_in_batches(point_storage):
    from vectorindex.engine.head import HISTORY
    from vectorindex.storage import IN_BATCH

    storage = point_storage
    alive = sorted(storage.alive_head_ids())
    gone = range(10**9, 10**9 + HISTORY)  # more ids than SQLite takes as parameters of one statement
    with CaptureQueriesContext(connection) as captured:
        ids, vectors = storage.head_rows([*gone[:5], *reversed(alive), *gone[5:]])
    assert ids.tolist() == alive[::-1]
    assert np.array_equal(vectors, storage.head_vectors(alive[::-1]))
    assert max(len(re.search(r" IN \(([^)]*)\)", q["sql"]).group(1).split(",")) for q in captured.captured_queries) <= IN_BATCH


@pytest.mark.django_db
def test_a_query_reads_its_candidates_versions_by_primary_key(point_storage):
    """Not through the (index_id, deleted) index, which holds every live row of the index."""
    from vectorindex.models import Version

    store = point_storage
    pks = list(Point.objects.order_by("pk").values_list("pk", flat=True)[:40])
    Version.objects.filter(vector_id__in=pks[:5]).update(deleted=True)
    with CaptureQueriesContext(connection) as captured:
        current = store.current_versions(pks)
    assert sorted(current) == pks[5:] and set(current.values()) == {1}
    [read] = [q["sql"] for q in captured.captured_queries if "vectorindex_version" in q["sql"]]
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("EXPLAIN " + read)
            columns = [column[0] for column in cursor.description]
            plan = [dict(zip(columns, row)) for row in cursor.fetchall()]
            assert [step["key"] for step in plan] == ["PRIMARY"], plan
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + read)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "vectorindex_version_deleted" not in plan and "(index_id=? AND vector_id=?)" in plan, plan


@pytest.mark.django_db
def test_a_rewritten_or_emptied_list_never_gives_one_of_its_seqs_again(point_storage):
    """A posting row's key names one content for good: the query cache relies on it (SQLite took the largest plus one)."""
    store = point_storage
    head = 2_000_000

    def seqs():
        return list(Posting.objects.filter(index_id=store.index_id, head_id=head).order_by("seq").values_list("seq", flat=True))

    store.append([(head, 1, b"a" * 12), (head, 1, b"b" * 12), (head, 1, b"c" * 12)])
    first = seqs()
    store.replace_postings(head, [(1, b"d" * 12)])  # defragmenting: the rows deleted, one written
    rewritten = seqs()
    assert len(rewritten) == 1 and rewritten[0] > max(first)
    store.replace_postings(head, [])  # every entry was garbage
    store.append([(head, 1, b"e" * 12)])
    after = Posting.objects.filter(index_id=store.index_id, head_id=head, count__gt=0).values_list("seq", "payload")
    assert [(seq, bytes(payload)) for seq, payload in after] == [(max(seqs()), b"e" * 12)]
    assert max(seqs()) > max(rewritten)
    assert store.list_sizes([head]) == {head: 1}
