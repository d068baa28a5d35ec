"""HalfVectorField and HalfVector: float16 on disk, indexed and searched like a VectorField."""

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models.functions import Length
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, check, clustered, recall
from tests.testapp.models import Frame
from vectorindex import HalfVector, HalfVectorField, L2Distance
from vectorindex.exceptions import CorruptVector
from vectorindex.models import Posting


def test_a_half_vector_is_pgvectors():
    half = HalfVector([1, 2.5, 3])
    assert repr(half) == "HalfVector([1.0, 2.5, 3.0])"
    assert half == HalfVector(np.array([1, 2.5, 3])) and half != HalfVector([1, 2.5, 4]) and half != [1, 2.5, 3]
    assert half.dimensions() == 3 and half.to_list() == [1.0, 2.5, 3.0] and half.to_numpy().dtype == np.float16
    assert np.asarray(half, dtype=np.float32).tolist() == [1.0, 2.5, 3.0]
    assert HalfVector("[0.1, 0.2]").to_list() == [np.float16(0.1).item(), np.float16(0.2).item()]
    with pytest.raises(ValueError, match=r"HalfVector: expected numbers within float16 range \(±65504\), got 70000 at position 1"):
        HalfVector([1, 70000])
    with pytest.raises(ValueError, match="HalfVector: expected finite numbers, got nan at position 0"):
        HalfVector([float("nan")])


def test_the_field_deconstructs_to_its_public_name():
    name, path, args, kwargs = HalfVectorField(dimensions=4, null=True).deconstruct()
    assert (path, kwargs) == ("vectorindex.HalfVectorField", {"dimensions": 4, "null": True})


@pytest.mark.django_db
def test_stored_as_float16_and_back_as_a_half_vector():
    frame = Frame.objects.create(embedding=[0.1] * 15 + [65504])
    stored = Frame.objects.annotate(size=Length("embedding")).get(pk=frame.pk)
    assert stored.size == 32  # 16 values of 2 bytes
    assert stored.embedding == HalfVector([0.1] * 15 + [65504])
    assert stored.embedding.to_list()[0] == float(np.float16(0.1))
    with pytest.raises(ValidationError, match=r"expected numbers within float16 range \(±65504\), got 70000 at position 0"):
        with transaction.atomic():  # as Django's own save errors do, it spoils the transaction it is in
            Frame.objects.create(embedding=[70000] + [0] * 15)
    assert Frame.objects.count() == 1


@pytest.mark.django_db
def test_a_row_of_another_size_is_named_in_half_values():
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {Frame._meta.db_table} (embedding) VALUES (%s)", [b"\0" * 20])
    with pytest.raises(CorruptVector, match=r"row \d+ stores 10 dimensions \(20 bytes\), expected 16"):
        list(Frame.objects.order_by(L2Distance("embedding", [0] * 16)))


@pytest.mark.django_db
def test_an_index_over_half_vectors_answers_and_stays_right_through_writes():
    vectors = clustered(1500, seed=11)
    rows, queries = vectors[:1400], vectors[1400:]
    frames = Frame.objects.bulk_create(Frame(embedding=v) for v in rows)
    build("frame_half")
    changed = frames[5]
    changed.embedding = rows[6] + 0.01  # saved as float16: the index holds what the row holds
    changed.save()
    Frame.objects.create(embedding=queries[0])
    assert "frame_half: ok" in check("frame_half")

    def nearest(q, exact=False):
        queryset = Frame.objects.order_by(L2Distance("embedding", q))
        return [f.pk for f in (queryset.exact() if exact else queryset)[:10]]

    with CaptureQueriesContext(connection) as queries_run:
        found = [nearest(q) for q in queries]
    assert any(Posting._meta.db_table in q["sql"] for q in queries_run.captured_queries)
    assert recall(found, [nearest(q, exact=True) for q in queries]) >= 0.9


@pytest.mark.django_db
def test_a_distance_to_a_cast_to_half_precision():
    """pgvector's Cast("embedding", HalfVectorField(...)): the distance in float16, answered exactly."""
    from django.core.exceptions import FieldError
    from django.db.models.functions import Cast

    from tests.django_app.models import Item
    from vectorindex import BitField

    Item.objects.create(id=1, embedding=[1.0001, 0, 0])  # 1.0 in float16
    Item.objects.create(id=2, embedding=[0.9, 0, 0])
    build("ivfflat_idx")  # the first of its indexes on the field itself, which serves the distance uncast
    half = L2Distance(Cast("embedding", HalfVectorField(dimensions=3)), [1, 0, 0])
    full = L2Distance("embedding", [1, 0, 0])
    with CaptureQueriesContext(connection) as queries_run:
        list(Item.objects.order_by(full)[:1])
    assert any(Posting._meta.db_table in q["sql"] for q in queries_run.captured_queries)
    with CaptureQueriesContext(connection) as queries_run:
        rows = list(Item.objects.annotate(h=half, f=full).order_by(half))
    assert not any(Posting._meta.db_table in q["sql"] for q in queries_run.captured_queries)  # exact
    assert [(r.pk, r.h) for r in rows][0] == (1, 0.0) and rows[0].f == pytest.approx(1e-4, rel=1e-2)
    assert rows[1].h == pytest.approx(float(1 - np.float16(0.9)))
    # A cast to the field's own kind and size only; the same distance named twice is computed once.
    assert len(Item.objects.annotate(a=half, b=L2Distance(Cast("embedding", HalfVectorField(dimensions=3)), [1, 0, 0]))) == 2
    with pytest.raises(FieldError, match=r"cannot be cast to HalfVectorField\(4\)"):
        list(Item.objects.order_by(L2Distance(Cast("embedding", HalfVectorField(dimensions=4)), [1, 0, 0])))
    with pytest.raises(FieldError, match=r"cannot be cast to BitField\(3\)"):
        list(Item.objects.order_by(L2Distance(Cast("embedding", BitField(length=3)), [1, 0, 0])))
