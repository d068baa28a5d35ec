"""storage/cache.py: posting rows a process read before, used again only where the query sees their keys."""

import json
import threading
from unittest import mock

import numpy as np
import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, clustered, worker
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime
from vectorindex.models import Posting
from vectorindex.storage.cache import ROW_OVERHEAD, PostingCache, posting_cache

POSTINGS = Posting._meta.db_table
EVERY_HEAD = 10_000  # probes: every list is read, so every list is cached


def nearest(vectors, k=10):
    return [
        [p.pk for p in Point.objects.approximate(probes=EVERY_HEAD).order_by(L2Distance("embedding", v))[:k]]
        for v in vectors
    ]


class Off(PostingCache):
    budget = 0


def uncached(vectors):
    """What the same queries find with the cache off, this process's cache left as it is.

    (Not by setting QUERY_CACHE_BYTES to 0: that would empty it.)
    """
    with mock.patch("vectorindex.storage.postings.posting_cache", Off()):
        return nearest(vectors)


def posting_statements(captured):
    """The SELECTs of the posting table, each statement of a batch (MySQL's first round trip) on its own."""
    return [
        sql
        for q in captured.captured_queries
        for sql in q["sql"].split(";\n")
        if POSTINGS in sql and sql.lstrip().startswith("SELECT")
    ]


def round_trips(captured):
    """Each round trip's statements, by what they begin with."""
    return [[sql.split(" FROM")[0] for sql in q["sql"].split(";\n")] for q in captured.captured_queries]


STATE = "SELECT id, status, generation, wal_lsn, built_dimensions, built_distance, calibration"
KEYS = "SELECT head_id, seq"


def storage():
    return runtime(get_declared("point_embedding"), "default").open()[0]


def heads_of(pk):
    """The heads whose lists hold an entry of point *pk*."""
    owners, entries = storage().read_postings_with_owners(sorted(storage().alive_head_ids()))
    return sorted(set(owners[entries["id"] == pk].tolist()))


def committed_by_another_process(*args):
    """Run ``tests.worker ARGS`` to its commit; what it printed."""
    process = worker(*args)
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        return json.loads(line)
    finally:
        process.kill()
        process.wait()


def split_a_crowded_list(queries):
    """(head, its vector) of the largest list, crowded past posting_limit here, cached by *queries*, then split by another process."""
    largest = max(storage().alive_head_ids(), key=lambda h: storage().list_sizes([h])[h])
    middle = storage().head_vectors([largest])[0]
    crowd = middle + np.random.default_rng(3).normal(scale=0.01, size=(200, len(middle))).astype(np.float32)
    Point.objects.bulk_create(Point(embedding=v) for v in crowd)
    nearest(queries)
    committed_by_another_process("job", "split", "point_embedding", str(largest))
    return largest, middle


@pytest.fixture
def points(transactional_db, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # maintenance runs when a test says
    posting_cache.clear()
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    yield clustered(20, seed=5)
    posting_cache.clear()


def test_a_list_read_once_is_taken_from_the_cache_and_answers_as_without_it(points):
    queries = points
    truth = uncached(queries)
    assert len(posting_cache) == 0
    with CaptureQueriesContext(connection) as cold:
        first = nearest(queries[:1])
    # The keys, then the rows (none was cached).
    assert [sql.split(" FROM")[0] for sql in posting_statements(cold)] == ["SELECT head_id, seq", "SELECT head_id, seq, payload"]
    cached = len(posting_cache)
    assert cached == Posting.objects.count()
    hits = posting_cache.hits
    with CaptureQueriesContext(connection) as warm:
        found = nearest(queries)
    assert [first[0], *found[1:]] == found and found == truth
    # One statement a query, the keys: every row came from the cache.
    assert [sql.split(" FROM")[0] for sql in posting_statements(warm)] == ["SELECT head_id, seq"] * len(queries)
    assert posting_cache.hits - hits == cached * len(queries)
    assert 0 < posting_cache.bytes <= posting_cache.budget


def test_the_keys_are_read_with_the_state_row_in_one_round_trip_where_the_database_allows(points):
    nearest(points[:1])  # the head index loaded, the lists cached
    with CaptureQueriesContext(connection) as captured:
        found = nearest(points[1:4])
    assert found == uncached(points[1:4])
    trips = round_trips(captured)
    if connection.vendor == "mysql":
        assert [trip for trip in trips if KEYS in trip] == [[STATE, KEYS]] * 3
    else:
        assert [trip for trip in trips if KEYS in trip or STATE in trip] == [[STATE], [KEYS]] * 3


def test_a_head_index_that_moved_on_since_its_lists_were_probed_is_probed_again(points):
    """Another process splits a list: the state row read with the keys says so, and the query probes again."""
    nearest(points)
    largest, middle = split_a_crowded_list(points)

    def near_middle():
        # Few probes: as many whatever the heads' number, so only the state row tells the head index moved on.
        return [p.pk for p in Point.objects.approximate(probes=3).order_by(L2Distance("embedding", middle))[:10]]

    with CaptureQueriesContext(connection) as captured:
        found = near_middle()
    if connection.vendor == "mysql":
        # Probed on the head index before the split, with the keys of those lists; then, the WAL
        # replayed, probed again and the keys of the lists after the split read.
        assert round_trips(captured)[:3] == [[STATE, KEYS], ["SELECT lsn, op, head_id, vector"], [KEYS]]
    with mock.patch("vectorindex.storage.postings.posting_cache", Off()):
        assert found == near_middle()
    assert largest not in storage().alive_head_ids()


def test_with_the_cache_off_a_round_reads_its_lists_in_one_statement_as_before(points, settings):
    settings.VECTORINDEX = {"JOBS": "manual", "QUERY_CACHE_BYTES": 0}
    with CaptureQueriesContext(connection) as captured:
        nearest(points[:3])
    assert [sql.split(" FROM")[0] for sql in posting_statements(captured)] == ["SELECT head_id, payload"] * 3
    assert len(posting_cache) == 0 and posting_cache.hits == 0
    settings.VECTORINDEX = {"JOBS": "manual"}
    nearest(points[:1])
    assert len(posting_cache)
    settings.VECTORINDEX = {"JOBS": "manual", "QUERY_CACHE_BYTES": 0}  # turned off: the next query empties it
    nearest(points[:1])
    assert len(posting_cache) == 0 and posting_cache.bytes == 0


def test_what_another_process_commits_is_seen_through_the_cache(points):
    """Insert, update, delete, defragment, split, merge, each committed by another process after this one cached every list."""
    queries = points
    nearest(queries)  # every list cached
    written = committed_by_another_process("write", "2", "11", "commit")["committed"]
    new_vectors = clustered(2, seed=11)
    assert [found[0] for found in nearest(new_vectors)] == written
    assert nearest(queries) == uncached(queries)

    # Packed into one row each: on SQLite the rewrite took back seq 1, a key this process cached.
    for head in sorted({h for pk in written for h in heads_of(pk)}):
        committed_by_another_process("job", "defragment", "point_embedding", str(head))
    assert all(len(heads_of(pk)) for pk in written)
    assert [found[0] for found in nearest(new_vectors)] == written
    assert nearest(queries) == uncached(queries)

    moved, gone = Point.objects.order_by("pk").values_list("pk", flat=True)[:2]
    committed_by_another_process("change", str(moved), "update", "12")
    committed_by_another_process("change", str(gone), "delete", "0")
    assert nearest(clustered(1, seed=12))[0][0] == moved
    assert all(gone not in found for found in nearest(queries))
    assert nearest(queries) == uncached(queries)

    largest, _middle = split_a_crowded_list(queries)
    assert largest not in storage().alive_head_ids()
    assert [found[0] for found in nearest(new_vectors)] == written
    assert nearest(queries) == uncached(queries)

    # A list left with fewer than merge_below live vectors goes to its neighbours.
    smallest = min(storage().alive_head_ids(), key=lambda h: storage().list_sizes([h])[h])
    members = Point.objects.filter(pk__in=[pk for pk in Point.objects.values_list("pk", flat=True) if smallest in heads_of(pk)])
    kept = list(members.values_list("pk", flat=True)[:3])
    members.exclude(pk__in=kept).delete()
    nearest(queries)
    committed_by_another_process("job", "merge", "point_embedding", str(smallest))
    assert smallest not in storage().alive_head_ids()
    for pk in kept:
        assert nearest([Point.objects.get(pk=pk).embedding])[0][0] == pk
    assert nearest(queries) == uncached(queries)


def test_an_uncommitted_append_is_seen_by_its_transaction_alone_and_a_rolled_back_one_leaves_nothing(points):
    queries = points
    nearest(queries)  # every list cached
    vector = clustered(1, seed=21)[0]
    before = set(posting_cache._rows)
    seen_elsewhere = []

    class RolledBack(Exception):
        pass

    with pytest.raises(RolledBack), transaction.atomic():
        mine = Point.objects.create(embedding=vector)
        assert nearest([vector])[0][0] == mine.pk  # its own write, beside cached rows of the same lists

        def other():
            try:
                seen_elsewhere.extend(nearest([vector])[0])
            finally:
                connections.close_all()

        thread = threading.Thread(target=other)  # another connection, the same cache
        thread.start()
        thread.join(60)
        raise RolledBack
    assert mine.pk not in seen_elsewhere and len(seen_elsewhere) == 10
    assert set(posting_cache._rows) == before  # nothing read inside the transaction was cached
    assert mine.pk not in nearest([vector])[0]
    # On SQLite the next append to those lists gets the rolled-back row's seq:
    # it must be read, not taken for the row that never was.
    again = Point.objects.create(embedding=vector)
    assert nearest([vector])[0][0] == again.pk
    assert nearest(queries) == uncached(queries)


def test_a_list_rewritten_between_the_keys_and_the_rows_is_read_again_whole(points, monkeypatch):
    store = storage()
    head = min(store.alive_head_ids())
    generation = store.read_state().generation
    store.search_postings([head], generation, {})  # cached
    written = Point.objects.create(embedding=store.head_vectors([head])[0])  # a new row in that list, not cached
    read_by_key = store._rows_by_key

    def rewritten_first(seqs_by_head):
        from vectorindex.index.maintenance import lists

        lists.rewrite_live(store, head)  # commits at once: no transaction
        return read_by_key(seqs_by_head)

    monkeypatch.setattr(store, "_rows_by_key", rewritten_first)
    rows = {}
    entries = store.search_postings([head], generation, rows)
    assert rows == {head: 1}  # the rewritten list, as it now stands
    assert np.array_equal(entries, store.read_postings([head])) and written.pk in entries["id"]


def test_a_build_has_keys_of_its_own(points):
    store = storage()
    head = min(store.alive_head_ids())
    generation = store.read_state().generation
    stored = store.search_postings([head], generation, {})
    build_key = (connection.alias, store.posting_table, store.index_id)
    [(seq,)] = Posting.objects.filter(index_id=store.index_id, head_id=head).values_list("seq")
    # As if an index of another build had had this key, with other contents.
    posting_cache.put((*build_key, generation + 1), [(head, seq, stored[:1].copy())])
    assert len(store.search_postings([head], generation + 1, {})) == 1
    assert np.array_equal(store.search_postings([head], generation, {}), stored)


def test_the_keys_are_read_from_the_primary_key_alone_and_rows_by_key_through_it(points):
    store = storage()
    heads = sorted(store.alive_head_ids())
    generation = store.read_state().generation
    store.search_postings(heads[:3], generation, {})
    Point.objects.create(embedding=store.head_vectors([heads[0]])[0])
    Point.objects.create(embedding=store.head_vectors([heads[1]])[0])
    with CaptureQueriesContext(connection) as captured:
        store.search_postings(heads[:3], generation, {})
    keys, by_key = posting_statements(captured)
    assert by_key.count("UNION ALL") >= 1
    with connection.cursor() as cursor:
        for statement in captured.captured_queries:
            if POSTINGS not in statement["sql"]:
                continue
            if connection.vendor == "mysql":
                cursor.execute("EXPLAIN " + statement["sql"])
                columns = [column[0] for column in cursor.description]
                plan = [dict(zip(columns, row)) for row in cursor.fetchall()]
                assert all(step["key"] == "PRIMARY" for step in plan if step["table"]), plan
                if statement["sql"] == keys:
                    assert "Using index" in plan[0]["Extra"], plan  # no row beyond the key's
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + statement["sql"])
                plan = " ".join(str(row[-1]) for row in cursor.fetchall())
                if statement["sql"] == keys:
                    assert "COVERING INDEX" in plan and "(index_id=? AND head_id=?)" in plan, plan
                else:
                    assert plan.count("(index_id=? AND head_id=? AND seq=?)") >= 2, plan


def test_the_least_recently_used_rows_go_first_and_the_bytes_stay_within_the_budget(settings):
    cache = PostingCache()
    build_key = ("default", "postings", 1, 7)
    row = np.zeros(100, np.uint8)
    settings.VECTORINDEX = {"QUERY_CACHE_BYTES": 3 * (row.nbytes + ROW_OVERHEAD)}
    cache.put(build_key, [(1, seq, row.copy()) for seq in (1, 2, 3)])
    assert cache.bytes == 3 * (row.nbytes + ROW_OVERHEAD) and len(cache) == 3
    cache.get(build_key, [(1, 1)])  # 2 is now the least recently used
    cache.put(build_key, [(1, 4, row.copy())])
    assert sorted(cache.get(build_key, [(1, seq) for seq in range(1, 5)])) == [(1, 1), (1, 3), (1, 4)]
    assert cache.bytes <= cache.budget
    cache.put(build_key, [(2, 1, np.zeros(10_000, np.uint8))])  # larger than the budget: not kept
    assert len(cache) == 3 and cache.bytes <= cache.budget
    assert not cache.get(build_key, [(1, 1)])[(1, 1)].flags.writeable
    settings.VECTORINDEX = {"QUERY_CACHE_BYTES": row.nbytes + ROW_OVERHEAD}  # a smaller budget, as the next read finds it
    cache.resize()
    assert len(cache) == 1 and cache.bytes <= cache.budget
