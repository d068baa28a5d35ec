"""Schema changes under a built index: rows still holding vectors of the old size are named wherever they are read."""

import numpy as np
import pytest
from django.core.management import CommandError
from django.db import connection

from tests.indexing import build, check, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.exceptions import CorruptVector
from vectorindex.models import Head, IndexState, Posting, Snapshot, Version, WalEntry

NAME = "point_embedding"


@pytest.fixture
def points(db):
    vectors = clustered(300)
    created = Point.objects.bulk_create(Point(group=i % 5, embedding=v) for i, v in enumerate(vectors))
    build(NAME)
    return vectors, [p.pk for p in created]


def state() -> IndexState:
    return IndexState.objects.get(name=NAME)


def contents(index_id: int) -> dict[str, int]:
    return {
        "heads": Head.objects.filter(index_id=index_id).count(),
        "postings": Posting.objects.filter(index_id=index_id).count(),
        "versions": Version.objects.filter(index_id=index_id).count(),
        "wal": WalEntry.objects.filter(index_id=index_id).count(),
        "snapshots": Snapshot.objects.filter(index_id=index_id).count(),
    }


def nearest(query: np.ndarray, k: int = 5, **filters) -> list[int]:
    return list(Point.objects.filter(**filters).order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


def exact_nearest(query: np.ndarray, k: int = 5) -> list[int]:
    return list(Point.objects.exact().order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


def store(pks: list[int], blob: bytes) -> None:
    """Write *blob* into rows' vectors behind Django's back (as rows of an older schema hold)."""
    with connection.cursor() as cursor:
        for pk in pks:
            cursor.execute(f"UPDATE {Point._meta.db_table} SET embedding = %s WHERE id = %s", [blob, pk])


# Rows of another size ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_build_refuses_rows_of_another_size_names_them_and_changes_nothing(points):
    vectors, pks = points
    before = state()
    held = contents(before.pk)
    wrong = pks[10:17]
    store(wrong, np.ones(8, "<f4").tobytes())

    with pytest.raises(CommandError) as caught:
        build(NAME)
    first = ", ".join(str(pk) for pk in wrong[:5])
    assert str(caught.value) == (
        f"point_embedding: testapp.Point.embedding: 7 rows store another size than 16 dimensions: rows {first} and 2 more; "
        f"row {wrong[0]} stores 8 dimensions (32 bytes); fix or clear those rows (save them with 16-dimensional "
        f"vectors, or delete them). The build changed nothing; run `manage.py vectorindex build point_embedding` "
        f"again once they are fixed."
    )
    after = state()
    assert (after.status, after.generation, after.built_at) == (IndexState.Status.READY, before.generation, before.built_at)
    assert contents(before.pk) == held

    # The rows load without their vectors, and a save with the right size fixes them.
    for point in Point.objects.defer("embedding").filter(pk__in=wrong):
        point.embedding = vectors[pks.index(point.pk)]
        point.save()
    build(NAME)
    assert "ok" in check(NAME)


@pytest.mark.django_db
def test_a_first_build_refuses_rows_of_another_size_and_leaves_the_index_not_built(db):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(20))
    odd = Point.objects.create(embedding=np.zeros(16))
    store([odd.pk], b"\x00" * 30)

    with pytest.raises(CommandError) as caught:
        build(NAME)
    named = f"row {odd.pk} stores 30 bytes, not a whole number of float32 values, expected 16; fix or clear that row"
    assert named in str(caught.value)
    assert state().status == IndexState.Status.EMPTY
    assert contents(state().pk)["heads"] == 0


@pytest.mark.django_db
def test_the_exact_path_names_rows_of_another_size(db, settings):
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZE": 7}  # the wrong row in a later chunk than the first
    vectors = clustered(40)
    pks = [p.pk for p in Point.objects.bulk_create(Point(group=i % 2, embedding=v) for i, v in enumerate(vectors))]
    store([pks[31]], np.ones(8, "<f4").tobytes())

    with pytest.raises(CorruptVector) as caught:
        exact_nearest(vectors[0])
    assert str(caught.value) == (
        f"testapp.Point.embedding: row {pks[31]} stores 8 dimensions (32 bytes), expected 16; "
        "fix or clear that row (save it with a 16-dimensional vector, or delete it)."
    )
    # The scan was closed before the rows were counted: the connection goes on.
    assert nearest(vectors[0], 1, group=0) == [pks[0]]


@pytest.mark.django_db
def test_the_re_rank_names_a_row_of_another_size(points):
    """int8 entries are re-ranked from the model's rows: a row changed behind the index's back is named."""
    vectors, pks = points
    store([pks[3]], np.ones(8, "<f4").tobytes())

    with pytest.raises(CorruptVector) as caught:
        nearest(vectors[3])
    assert str(caught.value) == (
        f"testapp.Point.embedding: row {pks[3]} stores 8 dimensions (32 bytes), expected 16; "
        "fix or clear that row (save it with a 16-dimensional vector, or delete it)."
    )
