"""Storage: the index's tables, through one connection."""

import re

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, clustered
from tests.testapp.models import Point
from vectorindex.models import Posting


@pytest.mark.django_db
def test_a_long_append_is_cut_into_statements_and_every_row_lands(monkeypatch):
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime
    from vectorindex.storage.dialects import mysql

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    store = runtime(get_declared("point_embedding"), "default").open()[0]
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
def test_the_rows_of_as_many_heads_as_a_view_asks_for_are_read_in_batches():
    from vectorindex.engine.head import HISTORY
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime
    from vectorindex.storage import IN_BATCH

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    storage, _ = runtime(get_declared("point_embedding"), "default").open()
    alive = sorted(storage.alive_head_ids())
    gone = range(10**9, 10**9 + HISTORY)  # more ids than SQLite takes as parameters of one statement
    with CaptureQueriesContext(connection) as captured:
        ids, vectors = storage.head_rows([*gone[:5], *reversed(alive), *gone[5:]])
    assert ids.tolist() == alive[::-1]
    assert np.array_equal(vectors, storage.head_vectors(alive[::-1]))
    assert max(len(re.search(r" IN \(([^)]*)\)", q["sql"]).group(1).split(",")) for q in captured.captured_queries) <= IN_BATCH
