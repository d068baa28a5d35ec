"""Writes change the index inside the same transaction as the rows (docs/ARCHITECTURE.md §3)."""

import threading
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, check, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Posting, Version, WalEntry


def nearest(vector, qs=None):
    qs = qs if qs is not None else Point.objects.all()
    found = qs.order_by(L2Distance("embedding", vector)).first()
    return None if found is None else found.pk


def index_rows():
    return Posting.objects.count(), Version.objects.count(), WalEntry.objects.count()


@pytest.fixture
def built(db):
    vectors = clustered(2000)
    Point.objects.bulk_create(Point(group=i % 20, embedding=v) for i, v in enumerate(vectors))
    build("point_embedding")
    return vectors


def index_sql(queries):
    tables = (Posting._meta.db_table, Version._meta.db_table)
    return [q["sql"] for q in queries if any(t in q["sql"] for t in tables)]


def test_save_is_found_and_update_moves_it(built):
    new = clustered(2, seed=99)
    point = Point.objects.create(embedding=new[0])
    assert nearest(new[0]) == point.pk
    point.embedding = new[1]
    point.save()
    assert nearest(new[1]) == point.pk
    assert nearest(new[0]) != point.pk  # the stale copy is never returned
    assert Version.objects.get(vector_id=point.pk).version == 2
    assert "point_embedding: ok" in check("point_embedding")


def test_a_save_that_leaves_the_vector_alone_does_no_index_work(built):
    point = Point.objects.order_by("pk").first()
    point.group = 99
    with CaptureQueriesContext(connection) as captured:
        point.save()
    assert index_sql(captured.captured_queries) == []
    with CaptureQueriesContext(connection) as captured:
        Point.objects.filter(pk=point.pk).update(group=98)
    assert index_sql(captured.captured_queries) == []
    point.embedding = point.embedding + 1
    with CaptureQueriesContext(connection) as captured:
        point.save(update_fields=["group"])  # the vector is not among the saved fields
    assert index_sql(captured.captured_queries) == []


def test_queryset_update_and_bulk_update_reindex(built):
    fresh = clustered(3, seed=42)
    first, second = Point.objects.order_by("pk")[:2]
    Point.objects.filter(pk=first.pk).update(embedding=fresh[0])
    assert nearest(fresh[0]) == first.pk
    first.refresh_from_db()
    second.embedding = fresh[1]
    first.group = 5  # changed, but not its vector: no index work for it
    Point.objects.bulk_update([first, second], ["group", "embedding"])
    assert nearest(fresh[1]) == second.pk
    assert Version.objects.get(vector_id=first.pk).version == 2
    assert Version.objects.get(vector_id=second.pk).version == 2
    assert "point_embedding: ok" in check("point_embedding")


def test_committed_delete_is_never_returned(built):
    vectors = built
    target = Point.objects.order_by("pk")[10]
    target.delete()
    assert nearest(vectors[10]) != target.pk
    ids = list(Point.objects.filter(group=4).values_list("pk", flat=True))
    Point.objects.filter(group=4).delete()
    found = {p.pk for q in vectors[4::20][:20] for p in Point.objects.order_by(L2Distance("embedding", q))[:10]}
    assert not found & set(ids)
    assert Version.objects.filter(vector_id__in=ids, deleted=True).count() == len(ids)
    assert "point_embedding: ok" in check("point_embedding")


def test_setting_a_vector_to_null_removes_it(built):
    point = Point.objects.order_by("pk")[3]
    vector = point.embedding
    point.embedding = None
    point.save()
    assert nearest(vector) != point.pk
    assert Version.objects.get(vector_id=point.pk).deleted


def test_bulk_create_of_ten_thousand_keeps_the_index_complete(built):
    vectors = clustered(10_000, seed=5)
    created = Point.objects.bulk_create(Point(embedding=v) for v in vectors)
    assert Version.objects.filter(vector_id__in=[p.pk for p in created[:500]]).count() == 500
    output = check("point_embedding")
    assert "point_embedding: ok" in output
    for i in (0, 4_999, 9_999):
        assert nearest(vectors[i]) == created[i].pk


def test_single_row_saves_keep_the_index_complete(built):
    vectors = clustered(300, seed=6)
    created = [Point.objects.create(embedding=v) for v in vectors]
    assert "point_embedding: ok" in check("point_embedding")
    assert all(nearest(v) == p.pk for v, p in zip(vectors[::30], created[::30]))


@pytest.mark.parametrize(
    "huge",
    [10**400, -(10**400), Decimal("1e400"), Fraction(10**400, 7), "[1" + "0" * 400 + ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"],
    ids=["int", "negative-int", "decimal", "fraction", "400-digits"],
)
def test_a_number_beyond_float_range_is_refused_by_every_write_and_changes_nothing(built, huge):
    value = huge if isinstance(huge, str) else [huge] + [0] * 15
    point = Point.objects.order_by("pk").first()
    before = list(Point.objects.order_by("pk").values_list("pk", "embedding")), index_rows()

    def refused(write):
        with pytest.raises(ValidationError) as caught, transaction.atomic():
            write()
        [error] = caught.value.error_dict["embedding"] if hasattr(caught.value, "error_dict") else [caught.value]
        assert error.code == "out_of_range"
        assert error.messages[0].startswith("embedding: expected numbers within float32 range (±3.402823e+38), got ")

    refused(lambda: Point.objects.create(embedding=value))
    refused(lambda: Point.objects.bulk_create([Point(embedding=[1] * 16), Point(embedding=value)]))
    refused(lambda: Point.objects.filter(pk=point.pk).update(embedding=value))
    point.embedding = value
    refused(point.save)
    refused(lambda: Point.objects.bulk_update([point], ["embedding"]))
    refused(point.full_clean)
    after = list(Point.objects.order_by("pk").values_list("pk", "embedding")), index_rows()
    assert [pk for pk, _ in after[0]] == [pk for pk, _ in before[0]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(after[0], before[0]))
    assert after[1] == before[1]
    assert "point_embedding: ok" in check("point_embedding")


def test_a_bad_vector_saved_on_a_loaded_row_is_the_field_s_validation_error(built):
    """The save's check for an unchanged vector reads the new value first; it
    leaves a bad one for the field to refuse, as on a model with no index."""
    point = Point.objects.order_by("pk").first()
    point.embedding = [1, 2, 3]
    with pytest.raises(ValidationError) as caught, transaction.atomic():
        point.save()
    assert caught.value.code == "dimensions"
    assert caught.value.messages == ["embedding: expected 16 dimensions, got 3."]


def test_bulk_create_with_ignore_conflicts_is_refused(built):
    from django.db import NotSupportedError

    with pytest.raises(NotSupportedError, match="ignore_conflicts or update_conflicts cannot keep a VectorIndex current"):
        Point.objects.bulk_create([Point(embedding=clustered(1)[0])], ignore_conflicts=True)


@pytest.mark.django_db(transaction=True)
def test_rolled_back_thousand_leave_no_trace():
    vectors = clustered(1000)
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(500, seed=1))
    build("point_embedding")
    before = index_rows()
    fresh = clustered(1000, seed=77) + 50  # far from everything else
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            for v in fresh:
                Point.objects.create(embedding=v)
            assert nearest(fresh[0]) is not None
            raise RuntimeError("roll back")
    assert index_rows() == before
    assert Point.objects.count() == 500
    found = {p for q in fresh[::50] for p in Point.objects.order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]}
    assert len(found) and Point.objects.filter(pk__in=found).count() == len(found)
    assert "point_embedding: ok" in check("point_embedding")
    del vectors


@pytest.mark.django_db(transaction=True)
def test_uncommitted_vectors_are_seen_only_by_their_own_transaction():
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(500, seed=2))
    build("point_embedding")
    fresh = clustered(20, seed=88) + 50
    seen_elsewhere = {}
    inside, after = threading.Event(), threading.Event()

    def other_connection():
        try:
            inside.wait(30)
            seen_elsewhere["during"] = [nearest(v) for v in fresh[:5]]
            after.wait(30)
            seen_elsewhere["after"] = [nearest(v) for v in fresh[:5]]
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_connection)
    thread.start()
    with transaction.atomic():
        points = [Point.objects.create(embedding=v) for v in fresh]
        assert [nearest(v) for v in fresh[:5]] == [p.pk for p in points[:5]]
        inside.set()
        while "during" not in seen_elsewhere and thread.is_alive():
            thread.join(0.05)
    after.set()
    thread.join(30)
    mine = {p.pk for p in points}
    assert not set(seen_elsewhere["during"]) & mine
    assert seen_elsewhere["after"] == [p.pk for p in points[:5]]


def nearest_head_retired_behind_a_copy(seed: int):
    """Copy this process's head index, then retire (as another process's split
    would) the head nearest a new vector: (runtime, storage, vector, that head, the copy)."""
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime
    from vectorindex.index.wal import change_heads

    rt = runtime(get_declared("point_embedding"), "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    vector = clustered(1, seed=seed)[0]
    target = int(head.search(vector, 1)[0][0, 0])
    copy = type(head).from_bytes(head.to_bytes(), 16, "l2")
    copy.generation, copy.lsn = head.generation, head.lsn
    with transaction.atomic():
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], retire=[target])
    return rt, storage, vector, target, copy


def test_a_writer_never_appends_to_a_retired_head(built, monkeypatch):
    """A process whose head index is a moment old routes to a retired head:
    the head-row check catches it, and it routes again on the current heads."""
    from vectorindex.index.runtime import Runtime
    from vectorindex.models import Head

    _rt, storage, vector, target, stale_copy = nearest_head_retired_behind_a_copy(seed=404)

    real_current = Runtime.current
    calls = []

    def current(self, storage, state):
        calls.append(state)
        return stale_copy if len(calls) == 1 else real_current(self, storage, state)

    monkeypatch.setattr(Runtime, "current", current)
    point = Point.objects.create(embedding=vector)
    assert len(calls) >= 2  # routed, found the head retired, caught up, routed again
    owners = set(Posting.objects.filter(index_id=storage.index_id, seq__gte=0).values_list("head_id", flat=True))
    assert target in owners  # the retired head still holds its old rows ...

    appended_to = set(entry_owners(storage, point.pk))
    assert appended_to and target not in appended_to  # ... but got nothing new
    assert not Head.objects.get(pk=target).alive


def entry_owners(storage, pk: int) -> dict[int, set[int]]:
    """head id -> the versions of *pk*'s entries in that head's list."""
    owners: dict[int, set[int]] = {}
    for row in Posting.objects.filter(index_id=storage.index_id):
        entries = storage.payload.decode([bytes(row.payload)])
        for version in entries["version"][entries["id"] == pk].tolist():
            owners.setdefault(row.head_id, set()).add(version)
    return owners


def test_a_new_row_is_indexed_in_one_round_trip_on_mysql(built):
    """MySQL: the heads' locks, the version and the append go as one batch of
    statements. SQLite (in process, nothing to save) keeps a statement each."""
    vector = clustered(1, seed=405)[0]
    with CaptureQueriesContext(connection) as captured:
        point = Point.objects.create(embedding=vector)
    index_statements = [q["sql"] for q in captured.captured_queries if "vectorindex_" in q["sql"]]
    batched = [sql for sql in index_statements if "@vectorindex_ok" in sql]
    if connection.vendor == "mysql":
        assert len(index_statements) == 1 and len(batched) == 1
    else:
        assert batched == [] and len(index_statements) >= 3
    assert nearest(vector) == point.pk
    assert Version.objects.get(vector_id=point.pk).version == 1
    assert "point_embedding: ok" in check("point_embedding")


def test_without_multi_statements_a_new_row_takes_a_statement_at_a_time(built, monkeypatch):
    """A connection whose OPTIONS turn mysqlclient's multi-statements off gets no batch."""
    options = {**connection.settings_dict.get("OPTIONS", {}), "multi_statements": False}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    vector = clustered(1, seed=411)[0]
    with CaptureQueriesContext(connection) as captured:
        point = Point.objects.create(embedding=vector)
    index_statements = [q["sql"] for q in captured.captured_queries if "vectorindex_" in q["sql"]]
    assert not any("@vectorindex_ok" in sql for sql in index_statements) and len(index_statements) >= 3
    assert nearest(vector) == point.pk
    assert "point_embedding: ok" in check("point_embedding")


def test_a_process_behind_the_heads_indexes_a_new_row_on_the_heads_as_they_are(built):
    """The batch finds the state row moved past this process's head index and
    writes nothing; the usual path catches up and indexes the row once."""
    rt, storage, vector, target, lagging = nearest_head_retired_behind_a_copy(seed=406)
    rt.head = lagging  # as another process's split left this one
    point = Point.objects.create(embedding=vector)
    assert Version.objects.get(vector_id=point.pk).version == 1  # the batch gave no version
    owners = entry_owners(storage, point.pk)
    assert owners and target not in owners and all(v == {1} for v in owners.values())
    assert rt.head.lsn == storage.read_state()[2]  # caught up
    assert nearest(vector) == point.pk  # (the retired head's other rows went nowhere: no check here)


def test_a_head_retired_between_the_check_and_the_lock_is_left_out(built, monkeypatch):
    """MySQL's batch: a split commits after the state row is read and before
    the heads are locked. The entry goes to the heads still alive, and the row
    is routed again for the rest."""
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime
    from vectorindex.index.wal import change_heads
    from vectorindex.storage import Storage

    if connection.vendor != "mysql":
        pytest.skip("the one-round-trip batch is MySQL's")
    rt = runtime(get_declared("point_embedding"), "default")
    rt.current(*rt.open())
    vector = clustered(1, seed=407)[0]
    target = int(rt.head.search(vector, 1)[0][0, 0])
    real_append_one = Storage.append_one

    def append_one(self, name, generation, lsn, vector_id, head_ids, count, payload):
        assert target in head_ids
        _added, lsn = change_heads(self, lsn, retire=[target])  # the split, just before the lock
        return real_append_one(self, name, generation, lsn, vector_id, head_ids, count, payload)

    monkeypatch.setattr(Storage, "append_one", append_one)
    point = Point.objects.create(embedding=vector)
    owners = entry_owners(rt.open()[0], point.pk)
    assert target not in owners and len(owners) >= 1 and all(v == {1} for v in owners.values())
    assert target not in rt.head.alive  # caught up before routing again
    assert nearest(vector) == point.pk  # (the retired head's other rows went nowhere: no check here)


def test_a_new_row_on_an_id_indexed_before_gets_a_newer_version(built):
    """The batch writes entries as version 1; an id with an older version row
    (its row deleted, the id given again) gets version 2, and entries to match."""
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    old = Point.objects.order_by("pk")[5]
    pk = old.pk
    old.delete()
    vector = clustered(1, seed=408)[0]
    point = Point.objects.create(pk=pk, embedding=vector)
    assert Version.objects.get(vector_id=pk).version == 2
    storage = runtime(get_declared("point_embedding"), "default").open()[0]
    assert any(2 in versions for versions in entry_owners(storage, pk).values())
    assert nearest(vector) == point.pk
    assert "point_embedding: ok" in check("point_embedding")


def routing_threads(monkeypatch) -> list[str]:
    """The name of the thread of each routing call from now on."""
    from vectorindex.engine import routing

    threads = []
    real_assign = routing.assign

    def assign(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_assign(*args, **kwargs)

    monkeypatch.setattr(routing, "assign", assign)
    return threads


def test_a_save_routes_on_a_thread_and_drops_it_when_a_receiver_changes_the_vector(built, monkeypatch):
    from django.db.models.signals import pre_save

    from vectorindex.index import writes

    threads = routing_threads(monkeypatch)
    first, second = clustered(2, seed=409)
    point = Point.objects.create(embedding=first)
    assert len(threads) == 1 and threads[0].startswith("vectorindex-router")  # routed ahead, once
    assert nearest(first) == point.pk

    replaced = clustered(1, seed=410)[0]

    def replace(sender, instance, **kwargs):
        instance.embedding = replaced

    pre_save.connect(replace, sender=Point)
    try:
        other = Point.objects.create(embedding=second)
    finally:
        pre_save.disconnect(replace, sender=Point)
    writes._router.submit(lambda: None).result()  # the routing ahead has run (one worker, in order)
    here = threading.current_thread().name
    # Routed ahead on the router, dropped, and routed again here (in either order).
    assert sorted(threads[1:]) == sorted([here, threads[0]])
    assert nearest(replaced) == other.pk and nearest(second) != other.pk
    assert "point_embedding: ok" in check("point_embedding")


def test_only_indexed_models_listen_for_deletes():
    from django.db.models.signals import post_delete

    from tests.testapp.models import Category, Item

    assert post_delete.has_listeners(Point)
    assert not post_delete.has_listeners(Category)  # Django's fast deletes stay on
    assert not post_delete.has_listeners(Item)


def test_bulk_create_routes_on_a_thread_while_its_rows_go_in(built, monkeypatch):
    from vectorindex.index import writes

    threads = routing_threads(monkeypatch)
    vectors = clustered(500, seed=8)
    created = Point.objects.bulk_create(Point(embedding=v) for v in vectors)
    assert len(threads) == 1 and threads[0].startswith("vectorindex-router")  # routed once, ahead
    assert writes._router._max_workers == 1
    assert "point_embedding: ok" in check("point_embedding")
    assert all(nearest(v) == p.pk for v, p in zip(vectors[::50], created[::50]))


def bulk_create_routed_ahead_to_one_head(monkeypatch, lsn_shift: int, count: int, seed: int) -> tuple[set[int], int]:
    """bulk_create *count* points, its routing ahead replaced by "all to one head",
    worked out at the head index's LSN plus *lsn_shift*; (the heads that got
    the new points, that one head)."""
    from vectorindex.index import writes
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    rt = runtime(get_declared("point_embedding"), "default")
    rt.current(*rt.open())
    one_head = int(min(rt.head.alive))
    real_route_ahead = writes.route_ahead

    def route_ahead(declared, using, values):
        routed = real_route_ahead(declared, using, values)
        assignment = (np.arange(len(values)), np.full(len(values), one_head))
        future = writes._router.submit(lambda: assignment)
        return writes.Routed(routed.head, routed.generation, routed.lsn + lsn_shift, routed.vectors, future)

    monkeypatch.setattr(writes, "route_ahead", route_ahead)
    created = {p.pk for p in Point.objects.bulk_create(Point(embedding=v) for v in clustered(count, seed=seed))}
    storage = rt.open()[0]
    owners = {
        row.head_id
        for row in Posting.objects.filter(index_id=storage.index_id)
        if set(storage.payload.decode([bytes(row.payload)])["id"].tolist()) & created
    }
    return owners, one_head


def test_bulk_create_uses_the_routing_worked_out_ahead(built, monkeypatch):
    owners, one_head = bulk_create_routed_ahead_to_one_head(monkeypatch, lsn_shift=0, count=20, seed=10)
    assert owners == {one_head}


def test_bulk_create_routes_again_when_the_heads_moved_since_it_routed_ahead(built, monkeypatch):
    """Routing worked out on an older head index (another LSN) is dropped, not used."""
    owners, _one_head = bulk_create_routed_ahead_to_one_head(monkeypatch, lsn_shift=-1, count=200, seed=9)
    assert len(owners) > 1  # routed again, on the head index as it is
    assert "point_embedding: ok" in check("point_embedding")


def test_bulk_update_of_rows_deleted_meanwhile_leaves_no_version_behind(built):
    points = list(Point.objects.order_by("pk")[:3])
    Point.objects.filter(pk=points[0].pk).delete()  # by someone else, after these were loaded
    fresh = clustered(3, seed=77)
    for point, vector in zip(points, fresh):
        point.embedding = vector
    Point.objects.bulk_update(points, ["embedding"])
    assert Version.objects.get(vector_id=points[0].pk).deleted
    assert nearest(fresh[1]) == points[1].pk
    assert "point_embedding: ok" in check("point_embedding")
