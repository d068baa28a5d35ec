"""SparseVectorField and SparseVector: pgvector's sparsevec, stored as its non-zero entries, answered by the exact scan."""

import re

import numpy as np
import pytest
from django.core import serializers
from django.core.exceptions import FieldError, ValidationError
from django.db import DataError, NotSupportedError, connection, models, transaction
from django.db.models import Avg, Sum
from django.db.models.functions import Cast
from django.test.utils import isolate_apps

from tests.testapp.models import Bag
from vectorindex import (
    CosineDistance,
    HalfVectorField,
    HammingDistance,
    L1Distance,
    L2Distance,
    MaxInnerProduct,
    SparseVector,
    SparseVectorField,
    VectorIndex,
)
from vectorindex.admin import preview_html
from vectorindex.checks import check_model_vector_indexes
from vectorindex.engine import distances as dense_distances
from vectorindex.engine import sparse
from vectorindex.exceptions import CorruptVector
from vectorindex.forms import SparseVectorFormField

DISTANCES = [(L2Distance, "l2"), (MaxInnerProduct, "ip"), (CosineDistance, "cosine"), (L1Distance, "l1")]


# SparseVector, as pgvector-python has it ------------------------------------------


def test_a_sparse_vector_from_a_dense_one_a_dict_or_its_text():
    vector = SparseVector([0, 2.5, 0, -1])
    assert (vector.dimensions(), vector.indices(), vector.values()) == (4, [1, 3], [2.5, -1.0])
    assert vector == SparseVector({3: -1, 1: 2.5, 0: 0}, 4) == SparseVector.from_text("{2:2.5,4:-1}/4")
    assert vector != SparseVector({1: 2.5}, 4)
    assert vector.to_list() == [0.0, 2.5, 0.0, -1.0]
    assert vector.to_numpy().dtype == np.float32 and vector.to_numpy().tolist() == [0.0, 2.5, 0.0, -1.0]
    assert vector.to_text() == "{2:2.5,4:-1.0}/4"
    assert repr(vector) == "SparseVector({1: 2.5, 3: -1.0}, 4)"
    # float32, as stored, written back as the shortest decimal that is that float32
    assert SparseVector([0.1, 1 / 3]).values() == [0.1, 0.33333334]
    assert SparseVector({}, 1_000_000_000).to_text() == "{}/1000000000"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SparseVector({1: 1.0}), "a dict of positions needs the dimensions"),
        (lambda: SparseVector([1, 2], 2), "dimensions are given only with a dict of positions"),
        (lambda: SparseVector({3: 1.0}, 3), "expected positions from 1 to 3, got 4"),
        (lambda: SparseVector({0: float("nan")}, 3), "expected finite numbers, got nan"),
        (lambda: SparseVector({0: 1.0}, 0), "expected 1 to 1,000,000,000 dimensions, got 0"),
        (lambda: SparseVector({"a": 1.0}, 3), "expected integer positions, got 'a'"),
        (lambda: SparseVector.from_text("{1:1,1:2}/3"), "a position is given twice"),
        (lambda: SparseVector.from_text("{1:x}/3"), "expected position:value entries, got '1:x'"),
        (lambda: SparseVector.from_text("[1, 2]"), "expected a sparse vector written as {1:0.5,3:2.0}/5"),
        (lambda: SparseVector(dict.fromkeys(range(16_001), 1.0), 20_000), "at most 16,000 non-zero values"),
        (lambda: SparseVector("{1:1}/3"), "text is read by SparseVector.from_text()"),
    ],
)
def test_a_sparse_vector_refuses_what_it_cannot_be(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# The field ------------------------------------------------------------------------------


def test_the_field_is_declared_with_or_without_dimensions():
    assert SparseVectorField(null=True).deconstruct()[1:] == ("vectorindex.SparseVectorField", [], {"null": True})
    assert SparseVectorField(dimensions=30_000).deconstruct()[3] == {"dimensions": 30_000}
    with pytest.raises(ValueError, match="SparseVectorField.dimensions must be None or an integer from 1 to"):
        SparseVectorField(dimensions=0)


@pytest.mark.django_db
def test_only_the_non_zero_entries_are_stored(settings):
    settings.VECTORINDEX = {"VECTORS_AS_LISTS": True}  # sparse vectors stay SparseVectors, as pgvector-python 1.0's
    dense = np.zeros(5000, dtype=np.float32)
    dense[[7, 4999]] = [0.5, -2.0]
    for value in (dense, dense.tolist(), SparseVector(dense), "{8:0.5,5000:-2}/5000", {7: 0.5, 4999: -2.0}):
        bag = Bag.objects.create(terms=value)
        bag.refresh_from_db()
        assert bag.terms == SparseVector({7: 0.5, 4999: -2.0}, 5000)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT LENGTH(terms) FROM {Bag._meta.db_table}")
        assert {size for (size,) in cursor.fetchall()} == {8 + 2 * 8}  # header and two (position, value) pairs


@pytest.mark.django_db
def test_bad_sparse_vectors_are_refused_before_anything_is_written():
    for bad, message in [
        (SparseVector([1, 2, 3]), "terms: expected 5000 dimensions, got 3."),
        ("{1:1}/5000x", "terms: expected a sparse vector written as {1:0.5,3:2.0}/5"),
        ([1, "a"], "terms: expected numbers, got 'a' at position 1."),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)), transaction.atomic():
            Bag.objects.create(terms=bad)
    with pytest.raises(ValidationError, match=re.escape("expected 5000 dimensions, got 3")):
        Bag.objects.bulk_create([Bag(terms={0: 1.0}), Bag(terms=SparseVector([1, 0, 1]))])
    assert not Bag.objects.exists()


# Distances --------------------------------------------------------------------------------


def _random_sparse(rng, dimensions, nonzero):
    vector = np.zeros(dimensions, dtype=np.float32)
    vector[rng.choice(dimensions, nonzero, replace=False)] = rng.standard_normal(nonzero).astype(np.float32)
    return vector


@pytest.mark.django_db
@pytest.mark.parametrize("distance, metric", DISTANCES)
def test_distances_match_the_dense_computation(distance, metric):
    rng = np.random.default_rng(7)
    rows = [_random_sparse(rng, 5000, int(rng.integers(0, 40))) for _ in range(60)]
    # Rows that share positions with the query, and one equal to it.
    query = _random_sparse(rng, 5000, 30)
    rows[5] = query.copy()
    rows[6][np.flatnonzero(query)[:10]] = 1.0
    bags = Bag.objects.bulk_create([Bag(title=str(i), terms=row) for i, row in enumerate(rows)] + [Bag(title="none")])
    expected = dense_distances.distances(metric, np.stack(rows), query)
    found = Bag.objects.filter(terms__isnull=False).annotate(d=distance("terms", SparseVector(query))).order_by("pk")
    got = np.array([np.nan if bag.d is None else bag.d for bag in found])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    if metric == "cosine":  # the empty rows have no direction
        assert np.isnan(got).sum() == sum(not row.any() for row in rows) > 0
    nearest = Bag.objects.order_by(distance("terms", query))[:5]  # a dense query works too
    assert [bag.pk for bag in nearest] == [bags[i].pk for i in np.argsort(np.nan_to_num(expected, nan=np.inf), kind="stable")[:5]]
    assert Bag.objects.annotate(d=distance("terms", query)).get(title="none").d is None


@pytest.mark.django_db
def test_filters_and_slices_on_sparse_distances():
    Bag.objects.bulk_create(Bag(title=str(i), words=SparseVector({i: 1.0, 9: 1.0}, 10)) for i in range(9))
    query = SparseVector({0: 1.0, 9: 1.0}, 10)
    near = Bag.objects.alias(d=L2Distance("words", query)).filter(d__lt=1).values_list("title", flat=True)
    assert list(near) == ["0"]
    ordered = Bag.objects.annotate(d=MaxInnerProduct("words", query)).order_by("d", "-title")[:3]
    assert [(bag.title, bag.d) for bag in ordered] == [("0", -2.0), ("8", -1.0), ("7", -1.0)]


@pytest.mark.django_db
def test_sparse_vectors_of_another_length_than_the_query_are_an_error():
    Bag.objects.create(words=SparseVector({0: 1.0}, 3))
    Bag.objects.create(words=SparseVector({0: 1.0}, 4))
    with pytest.raises(DataError, match=re.escape("L2Distance('words'): different sparse vector dimensions: 4 and 3.")):
        list(Bag.objects.annotate(d=L2Distance("words", SparseVector({0: 1.0}, 3))))
    assert Bag.objects.filter(pk__lte=Bag.objects.order_by("pk").first().pk).annotate(
        d=L2Distance("words", [1, 0, 0])
    ).get().d == 0


@pytest.mark.django_db
def test_what_sparse_vectors_cannot_do_is_refused_with_what_to_write():
    query = SparseVector({0: 1.0}, 5000)
    with pytest.raises(FieldError, match=re.escape(
        "L2Distance: 'embedding' is a VectorField and the query vector a sparse one; "
        "compare it with a dense vector (SparseVector.to_list()), or query a SparseVectorField."
    )):
        from tests.django_app.models import Item

        list(Item.objects.order_by(L2Distance("embedding", SparseVector([1, 0, 0]))))
    with pytest.raises(FieldError, match="HammingDistance: 'terms' is a SparseVectorField, not a BitField"):
        list(Bag.objects.order_by(HammingDistance("terms", "101")))
    with pytest.raises(FieldError, match="cannot be cast to HalfVectorField"):
        list(Bag.objects.order_by(L2Distance(Cast("terms", HalfVectorField(dimensions=5000)), query)))
    with pytest.raises(ValueError, match="L2Distance: the query vector has 3 dimensions, but 'terms' has 5000"):
        list(Bag.objects.order_by(L2Distance("terms", SparseVector([1, 0, 0]))))
    with pytest.raises(ValueError, match=re.escape("L2Distance: query vector: a dict of positions gives no length")):
        L2Distance("terms", {0: 1.0})
    for aggregate in (Avg, Sum):
        with pytest.raises(NotSupportedError, match=r"\('terms'\): sparse vectors have no average or sum"):
            Bag.objects.aggregate(aggregate("terms"))


@pytest.mark.django_db
def test_a_corrupt_stored_sparse_vector_is_named_by_its_row():
    good = Bag.objects.create(terms={1: 1.0})
    bad = Bag.objects.create(terms={2: 1.0})
    with connection.cursor() as cursor:  # not through the field: raw bytes
        cursor.execute(f"UPDATE {Bag._meta.db_table} SET terms = %s WHERE id = %s", [b"\x01\x02\x03", bad.pk])
    message = (
        f"testapp.Bag.terms: row {bad.pk} (3 bytes) stores something other than a sparse vector of 5000 dimensions; "
        "fix or clear that row"
    )
    with pytest.raises(CorruptVector, match=re.escape(message)):
        list(Bag.objects.order_by(L1Distance("terms", SparseVector({0: 1.0}, 5000))))
    with pytest.raises(CorruptVector, match=re.escape("testapp.Bag.terms: a row stores 3 bytes, not a sparse vector")):
        Bag.objects.get(pk=bad.pk)
    assert Bag.objects.defer("terms").get(pk=bad.pk).pk == bad.pk
    assert Bag.objects.get(pk=good.pk).terms == SparseVector({1: 1.0}, 5000)
    # A blob that reads as a sparse vector, of another length than the field's.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Bag._meta.db_table} SET terms = %s WHERE id = %s",
            [sparse.to_bytes(sparse.parse([1.0, 0.0], None)), good.pk],
        )
    with pytest.raises(CorruptVector, match=re.escape(
        f"rows {good.pk} (16 bytes), {bad.pk} (3 bytes) store something other than a sparse vector of 5000 "
        "dimensions; fix or clear those rows (save them with sparse vectors of 5000 dimensions, or delete them)."
    )):
        list(Bag.objects.order_by(L1Distance("terms", SparseVector({0: 1.0}, 5000))))


# Forms, fixtures, admin, checks ------------------------------------------------------------


def test_the_form_field_reads_pgvector_text_and_says_what_is_wrong():
    field = SparseVectorFormField(dimensions=3, required=False)
    assert field.clean("{1:1,3:3}/3") == SparseVector([1, 0, 3])
    assert field.clean("[1, 0, 3]") == SparseVector([1, 0, 3])
    assert field.clean("") is None
    with pytest.raises(ValidationError, match=re.escape("expected 3 dimensions, got 4.")):
        field.clean("{1:1}/4")
    html = field.widget.render("terms", SparseVector([1.5, 0, 0]))
    assert 'type="text"' in html and 'value="{1:1.5}/3"' in html


@pytest.mark.django_db
def test_sparse_vectors_in_fixtures():
    Bag.objects.create(id=1, words=SparseVector({4: 0.25}, 7), terms=None)
    data = serializers.serialize("json", Bag.objects.all())
    assert '"words": "{5:0.25}/7"' in data and '"terms": null' in data
    Bag.objects.all().delete()
    for obj in serializers.deserialize("json", data):
        obj.save()
    assert Bag.objects.get(pk=1).words == SparseVector({4: 0.25}, 7)


def test_the_admin_shows_a_summary():
    assert str(preview_html(SparseVector({0: 0.5, 9: 2.0}, 30_000))) == (
        '<span title="30,000 dimensions, 2 non-zero: {1:0.5, 10:2}">30,000 dimensions, 2 non-zero: {1:0.5, 10:2}</span>'
    )
    long = SparseVector(dict.fromkeys(range(12), 1.0), 12)
    html = str(preview_html(long))
    assert "12 dimensions, 12 non-zero: {1:1, 2:1, 3:1, 4:1, 5:1, …}" in html and long.to_text() in html
    assert "<details" not in str(preview_html(long, full=False))


@isolate_apps("tests.testapp")
def test_no_index_serves_sparse_vectors():
    class Doc(models.Model):
        terms = SparseVectorField(dimensions=100)

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["terms"], name="doc_terms")]

    [error] = [m for m in check_model_vector_indexes(Doc) if m.id == "vectorindex.E102"]
    assert error.msg == (
        "testapp.Doc: VectorIndex 'doc_terms' is on 'terms', which is a SparseVectorField, not a VectorField or "
        "HalfVectorField (no index serves sparse vectors: their distances are answered by the exact scan)."
    )
