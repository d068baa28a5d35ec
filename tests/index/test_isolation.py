"""Queries and writes inside transactions whose snapshot is older than this process's head index.

Under REPEATABLE READ (MySQL/MariaDB) and in SQLite's WAL mode, a transaction
reads every table as it was when it began. When a split commits in another
thread of the same process meanwhile, the process's shared head index moves
past what the transaction can see: the split's new lists are empty to it,
and its vectors are still under the retired head.
"""

import threading
from contextlib import contextmanager

import numpy as np
import pytest
from django.db import connection, connections, transaction

from tests.index.streamed import crowd_one_head, declared
from tests.indexing import build, check, clustered
from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.index import maintenance
from vectorindex.index.runtime import runtime
from vectorindex.models import Head


def levels():
    return ["read committed", "repeatable read"] if connection.vendor == "mysql" else ["wal"]


@contextmanager
def transaction_at(level):
    """A transaction at *level* whose snapshot is taken at once."""
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {level.upper()}")
        with transaction.atomic():
            Streamed.objects.count()
            yield
        return
    # SQLite: in WAL mode a deferred transaction reads one snapshot, and a
    # writer on another connection may commit meanwhile.
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
    mode, connection.transaction_mode = connection.transaction_mode, None
    try:
        with transaction.atomic():
            Streamed.objects.count()
            yield
    finally:
        connection.transaction_mode = mode
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=DELETE")


def in_thread(work):
    """Run *work* on another thread (its own connection) and wait for it."""
    errors = []

    def run():
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - raised in the test's thread
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


@pytest.fixture
def crowded(transactional_db, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the split runs when the test says
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build("streamed_embedding")
    target = crowd_one_head(150)
    runtime(declared(), "default").current(*runtime(declared(), "default").open())
    return target


def split_and_catch_up(target):
    """Split *target* and its follow-ups, then let the process's head index catch up (a query)."""
    queue = [("split", {"head_id": target})]
    while queue:
        name, arguments = queue.pop(0)
        queue.extend(maintenance.run(name, declared(), **arguments).follow_up)
    rt = runtime(declared(), "default")
    rt.current(*rt.open())


@pytest.mark.parametrize("level", levels())
def test_a_query_routes_as_its_snapshot_sees_the_heads(crowded, level):
    target = crowded
    crowd = list(Streamed.objects.order_by("-pk").values_list("pk", "embedding")[:150])
    queries = [vector for _pk, vector in crowd[:20]]
    with transaction_at(level):
        head_before = runtime(declared(), "default").head.lsn
        in_thread(lambda: split_and_catch_up(target))
        assert runtime(declared(), "default").head.lsn > head_before  # the shared head moved on
        found = [list(Streamed.objects.order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in queries]
        exact = [list(Streamed.objects.exact().order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in queries]
    assert not Head.objects.get(pk=target).alive
    hits = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert hits >= 0.9, hits


@pytest.mark.parametrize("level", levels())
def test_a_query_of_a_transaction_older_than_the_processes_snapshot(crowded, level):
    """The process's head index is loaded from a snapshot newer than the transaction's LSN."""
    from vectorindex.index.recovery import take_snapshot

    target = crowded
    queries = list(Streamed.objects.order_by("-pk").values_list("embedding", flat=True)[:10])
    with transaction_at(level):
        rt = runtime(declared(), "default")

        def split_snapshot_reload():
            split_and_catch_up(target)
            take_snapshot(declared(), "default")
            rt.forget()
            rt.current(*rt.open())  # loaded afresh from the new snapshot: no history before it

        in_thread(split_snapshot_reload)
        found = [list(Streamed.objects.order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in queries]
        exact = [list(Streamed.objects.exact().order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:10]) for q in queries]
    hits = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert hits >= 0.9, hits


@pytest.mark.skipif("connection.vendor != 'mysql'", reason="a SQLite transaction that writes sees every commit before it")
@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
def test_a_write_routed_to_a_head_retired_after_its_snapshot(crowded, level):
    target = crowded
    centre = Head.objects.get(pk=target).vector
    vector = np.frombuffer(bytes(centre), dtype="<f4") + 0.01
    rt = runtime(declared(), "default")
    lsn = rt.head.lsn
    with transaction_at(level):
        in_thread(lambda: [maintenance.run("split", declared(), head_id=target)])
        assert rt.head.lsn == lsn  # nothing has told this process about the split yet
        point = Streamed.objects.create(embedding=vector)
    assert not Head.objects.get(pk=target).alive
    assert Streamed.objects.order_by(L2Distance("embedding", vector)).first().pk == point.pk
    assert "streamed_embedding: ok" in check("streamed_embedding")


@pytest.mark.skipif("connection.vendor != 'mysql'", reason="SQLite has no isolation levels to choose")
def test_jobs_read_committed_rows_whatever_the_sessions_isolation(crowded, monkeypatch):
    """A job that waited for a lock must see what the transaction it waited for committed."""
    from vectorindex.storage import Storage

    seen = []
    original = Storage.read_postings

    def read_postings(self, *args, **kwargs):
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT trx_isolation_level FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID()"
            )
            seen.extend(row[0] for row in cursor.fetchall())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "read_postings", read_postings)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        maintenance.run("split", declared(), head_id=crowded)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    assert seen and set(seen) == {"READ COMMITTED"}, seen


@pytest.mark.skipif("connection.vendor != 'mysql'", reason="on SQLite a transaction that writes begins after the build's")
@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
def test_a_write_that_waited_for_a_build_writes_the_entries_the_build_chose(transactional_db, level, monkeypatch):
    """The first read saw the index not built (no entry layout yet); the build then chose int8."""
    import time

    from tests.testapp.models import Point
    from vectorindex.index import build as building
    from vectorindex.models import IndexState

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(2000, seed=8))
    original = building._read_vectors

    def slow_read(*args, **kwargs):
        time.sleep(1.5)  # the build holds the state row meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(building, "_read_vectors", slow_read)
    started = threading.Event()

    def build_it():
        started.set()
        build("point_embedding")

    thread = threading.Thread(target=lambda: (build_it(), connections.close_all()))
    thread.start()
    started.wait()
    while IndexState.objects.get(name="point_embedding").status != "building":
        time.sleep(0.01)
    time.sleep(0.5)
    vector = clustered(1, seed=9)[0] + 25
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {level.upper()}")
    with transaction.atomic():
        assert IndexState.objects.get(name="point_embedding").status == "building"  # as this transaction first saw it
        point = Point.objects.create(embedding=vector)  # waits for the build
    thread.join(120)
    assert IndexState.objects.get(name="point_embedding").status == "ready"
    assert Point.objects.order_by(L2Distance("embedding", vector)).first().pk == point.pk
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.skipif("connection.vendor != 'mysql'", reason="SQLite's snapshot cannot write after another connection's commit")
def test_bulk_update_under_repeatable_read_gives_no_version_to_a_row_deleted_after_the_snapshot(crowded):
    from vectorindex.models import Version

    points = list(Streamed.objects.order_by("pk")[:3])
    fresh = clustered(3, seed=78) + 20
    with transaction_at("repeatable read"):
        in_thread(lambda: Streamed.objects.filter(pk=points[0].pk).delete())
        assert Streamed.objects.filter(pk=points[0].pk).exists()  # still there, to this snapshot
        for point, vector in zip(points, fresh):
            point.embedding = vector
        Streamed.objects.bulk_update(points, ["embedding"])
    index_id = runtime(declared(), "default").open()[0].index_id
    assert Version.objects.get(index_id=index_id, vector_id=points[0].pk).deleted
    assert "streamed_embedding: ok" in check("streamed_embedding")
