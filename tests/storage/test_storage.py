"""Storage: a query's reads spread over several connections at once, outside a transaction."""

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Posting, Version


def reads_of(table: str, captured) -> int:
    return sum(table in q["sql"] and q["sql"].lstrip().startswith("SELECT") for q in captured)


def keys_read(table: str, captured) -> int:
    """How many keys this connection's reads of *table* asked for (their IN lists)."""
    lists = [re.search(r" IN \(([^)]*)\)", q["sql"]) for q in captured if table in q["sql"] and q["sql"].lstrip().startswith("SELECT")]
    return sum(len(found.group(1).split(",")) for found in lists if found)


def posting_reads(captured) -> int:
    return reads_of(Posting._meta.db_table, captured)


def nearest(queries):
    return [
        [(p.pk, p.d) for p in Point.objects.approximate(probes=64).annotate(d=L2Distance("embedding", q)).order_by("d")[:10]]
        for q in queries
    ]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_readers_read_the_same_lists(settings):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    queries = clustered(30, seed=7)
    settings.VECTORINDEX = {"QUERY_READERS": 1}
    with CaptureQueriesContext(connection) as alone:
        one = nearest(queries)
    settings.VECTORINDEX = {"QUERY_READERS": 4, "QUERY_READERS_ABOVE_US": 0}
    with CaptureQueriesContext(connection) as spread:
        many = nearest(queries)
    assert many == one
    assert posting_reads(alone.captured_queries) >= len(queries)
    postings, versions = Posting._meta.db_table, Version._meta.db_table
    assert reads_of(versions, alone.captured_queries) >= len(queries)
    for table in (postings, versions):
        alone_keys, spread_keys = keys_read(table, alone.captured_queries), keys_read(table, spread.captured_queries)
        if connection.vendor == "mysql":
            # This connection read one share; the reader threads' connections the rest.
            assert 0 < spread_keys <= alone_keys / 2
        else:
            # SQLite: one connection reads them all, as before.
            assert spread_keys == alone_keys


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_its_own_appends_are_read(settings):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    settings.VECTORINDEX = {"QUERY_READERS": 4, "QUERY_READERS_ABOVE_US": 0}
    vector = (clustered(1, seed=11)[0] + np.float32(0.01)).astype(np.float32)
    with transaction.atomic():
        new = Point.objects.create(embedding=vector)
        with CaptureQueriesContext(connection) as captured:
            found = Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first()
        assert found.pk == new.pk
        assert posting_reads(captured.captured_queries) >= 1  # on the transaction's connection
    # Committed, it is found from the readers' connections too.
    assert Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first().pk == new.pk


@pytest.mark.django_db(transaction=True)
def test_reads_are_spread_only_while_a_key_takes_longer_than_the_threshold(settings, monkeypatch):
    """Rows from the buffer pool are read on one connection; rows from the disk on several."""
    from vectorindex import storage

    rows = [(key, key * 2) for key in range(64)]
    paces = {}
    monkeypatch.setattr(storage, "_paces", paces)
    read_here, read_there = [], []
    monkeypatch.setattr(storage, "_read", lambda c, sql, params, keys, batch: read_here.extend(keys) or rows[: len(keys)])
    monkeypatch.setattr(storage, "_executor", lambda size: ThreadPoolExecutor(size))
    monkeypatch.setattr(
        storage, "_read_on_thread_connection",
        lambda alias, sql, params, keys, batch: read_there.extend(keys) or rows[: len(keys)],
    )
    clock = iter(float(t) for t in range(1000))  # each timed read takes 1 s: 1/64 s a key
    monkeypatch.setattr(storage.time, "perf_counter", lambda: next(clock))

    def read(above_us: float) -> tuple[int, int]:
        settings.VECTORINDEX = {"QUERY_READERS": 4, "QUERY_READERS_ABOVE_US": above_us}
        read_here.clear()
        read_there.clear()
        assert len(storage.read_by_keys(connection, str, [], range(64), kind="postings", per_reader=8)) == 64
        return len(read_here), len(read_there)

    assert read(1e6 / 32) == (64, 0)  # nothing known yet: one connection, timed
    if connection.vendor != "mysql":
        assert paces == {}  # SQLite reads on its one connection, always
        return
    assert paces == {("default", "postings"): [1 / 64, 1]}
    # Slower than the threshold: spread, untimed, but for one read in SAMPLE_EVERY.
    shares = [read(1e6 / 128) for _ in range(2, 2 * storage.SAMPLE_EVERY + 1)]
    sampled = [n for n, share in enumerate(shares, start=2) if share == (64, 0)]
    assert sampled == [storage.SAMPLE_EVERY, 2 * storage.SAMPLE_EVERY]
    assert all(share == (16, 48) for n, share in enumerate(shares, start=2) if n not in sampled)
    assert paces[("default", "postings")][0] == pytest.approx(1 / 64)
    assert read(1e6 / 32) == (64, 0)  # faster than this threshold: one connection
    assert read(0) == (16, 48)  # 0: always spread
    with transaction.atomic():  # inside a transaction: its own connection, whatever the pace
        assert read(0) == (64, 0)


@pytest.mark.django_db
def test_a_long_append_is_cut_into_statements_and_every_row_lands(monkeypatch):
    from vectorindex import storage as storage_module
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    store = runtime(get_declared("point_embedding"), "default").open()[0]
    monkeypatch.setattr(storage_module, "APPEND_STATEMENT_BYTES", 1000)
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
