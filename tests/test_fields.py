"""VectorField: declaration, storage, and refusing bad values before any write."""

from decimal import Decimal

import numpy as np
import pytest
from django.core.exceptions import FieldError, ValidationError
from django.db import connection, models, transaction

from tests.testapp.models import Document, Item
from vectorindex import VectorField
from vectorindex.exceptions import CorruptVector

# Declaration --------------------------------------------------------------------


@pytest.mark.parametrize("dimensions", [None, 0, -1, 16_384, 2.0, "3", True])
def test_dimensions_is_checked_when_the_model_class_is_defined(dimensions):
    kwargs = {} if dimensions is None else {"dimensions": dimensions}
    with pytest.raises(ValueError) as caught:

        class Bad(models.Model):
            embedding = VectorField(**kwargs)

            class Meta:
                app_label = "testapp"

    assert str(caught.value) == (
        f"VectorField.dimensions must be an integer from 1 to 16383, got {dimensions!r}."
    )


def test_dimension_limits_are_accepted():
    assert VectorField(dimensions=1).dimensions == 1
    assert VectorField(dimensions=16_383).dimensions == 16_383


def test_deconstruct_uses_the_public_path():
    name, path, args, kwargs = VectorField(dimensions=5, null=True).deconstruct()
    assert path == "vectorindex.VectorField"
    assert kwargs == {"dimensions": 5, "null": True}


def test_column_type_per_backend():
    field = Item._meta.get_field("embedding")
    expected = {"mysql": "longblob", "sqlite": "BLOB"}[connection.vendor]
    assert field.db_type(connection) == expected


def test_only_meaningful_lookups():
    with pytest.raises(FieldError, match="Unsupported lookup 'lt' for VectorField"):
        Item.objects.filter(embedding__lt=[0] * 8)
    with pytest.raises(FieldError, match="Unsupported lookup 'contains'"):
        Item.objects.filter(embedding__contains=[0] * 8)


# Storage ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_round_trip_as_float32_array():
    value = np.random.default_rng(0).normal(size=8)
    item = Item.objects.create(embedding=value)
    loaded = Item.objects.get(pk=item.pk).embedding
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == np.float32 and loaded.shape == (8,)
    np.testing.assert_array_equal(loaded, value.astype(np.float32))
    loaded[0] = 1.0  # a writable array of its own


@pytest.mark.django_db
def test_vectors_as_lists_everywhere_a_value_comes_back(settings):
    """VECTORS_AS_LISTS: pgvector-python 1.0's lists, from a load, values(), full_clean() and Avg/Sum."""
    from django.db.models import Avg, Sum

    settings.VECTORINDEX = {"VECTORS_AS_LISTS": True}
    item = Item.objects.create(embedding=[0.5, 1, 2, 3, 4, 5, 6, 7])
    loaded = Item.objects.get(pk=item.pk)
    assert loaded.embedding == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0] and type(loaded.embedding[0]) is float
    assert list(Item.objects.values_list("embedding", flat=True)) == [loaded.embedding]
    fresh = Item(embedding=np.arange(8))
    fresh.full_clean(exclude=["category"])
    assert fresh.embedding == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    totals = Item.objects.aggregate(Avg("embedding"), Sum("embedding"))
    assert totals == {"embedding__avg": loaded.embedding, "embedding__sum": loaded.embedding}
    loaded.name = "kept"
    loaded.save()  # a list saved back is the same vector: stored as it was
    assert Item.objects.get(pk=item.pk).embedding == loaded.embedding
    settings.VECTORINDEX = {}
    assert isinstance(Item.objects.get(pk=item.pk).embedding, np.ndarray)


def test_vectors_as_lists_is_true_or_false(settings):
    from django.core.exceptions import ImproperlyConfigured

    from vectorindex.conf import vectorindex_settings

    settings.VECTORINDEX = {"VECTORS_AS_LISTS": 1}
    with pytest.raises(ImproperlyConfigured, match=r"VECTORINDEX\['VECTORS_AS_LISTS'\] must be True or False, got 1"):
        vectorindex_settings.VECTORS_AS_LISTS


@pytest.mark.django_db
def test_stored_as_little_endian_float32_blob():
    item = Item.objects.create(embedding=[1, 2, 3, 4, 5, 6, 7, 8.5])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT embedding FROM {Item._meta.db_table} WHERE id = %s", [item.pk])
        (blob,) = cursor.fetchone()
    assert bytes(blob) == np.array([1, 2, 3, 4, 5, 6, 7, 8.5], dtype="<f4").tobytes()


@pytest.mark.django_db
def test_null_gives_none_and_lookups_work():
    empty = Document.objects.create(title="empty")
    full = Document.objects.create(title="full", embedding=[1, 2, 3])
    assert Document.objects.get(pk=empty.pk).embedding is None
    assert list(Document.objects.filter(embedding__isnull=True)) == [empty]
    assert list(Document.objects.filter(embedding=[1, 2, 3])) == [full]
    assert list(Document.objects.filter(embedding__in=[[1, 2, 3], [4, 5, 6]])) == [full]


@pytest.mark.django_db
def test_a_corrupt_stored_value_is_reported():
    item = Item.objects.create(embedding=[0] * 8)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Item._meta.db_table} SET embedding = %s WHERE id = %s", [b"\x00" * 12, item.pk])
    with pytest.raises(CorruptVector) as caught:
        Item.objects.get(pk=item.pk)
    assert str(caught.value) == (
        "testapp.Item.embedding: a row stores 3 dimensions (12 bytes), expected 8; fix or clear such rows "
        "(a distance query over them names them, and .defer('embedding') loads them)."
    )
    # As the message says: the row loads without its vector, and is fixed by a save.
    loaded = Item.objects.defer("embedding").get(pk=item.pk)
    loaded.embedding = [1] * 8
    loaded.save()
    assert Item.objects.get(pk=item.pk).embedding.tolist() == [1] * 8


# Refusing bad values ---------------------------------------------------------------

OUT_OF_RANGE = "expected numbers within float32 range (±3.402823e+38), got"

BAD_VALUES = [
    ([1, 2, 3], "dimensions", "embedding: expected 8 dimensions, got 3."),
    ([1, 2, 3, 4, 5, 6, 7, float("nan")], "not_finite", "embedding: expected finite numbers, got nan at position 7."),
    ([float("-inf")] + [0] * 7, "not_finite", "embedding: expected finite numbers, got -inf at position 0."),
    ([0, "x", 0, 0, 0, 0, 0, 0], "not_numbers", "embedding: expected numbers, got 'x' at position 1."),
    ([[0] * 8], "nested", "embedding: expected a flat sequence of numbers, got a nested sequence at position 0."),
    (np.zeros((2, 4)), "nested", "embedding: expected a flat sequence of numbers, got a nested sequence of shape (2, 4)."),
    (np.array(3.0), "not_a_sequence", "embedding: expected a sequence of numbers, got a 0-d array array(3.)."),
    (7, "not_a_sequence", "embedding: expected a sequence of numbers, got 7 (int)."),
    ("not a vector", "invalid_text", "embedding: expected a vector written as [1.0, 2.0, …], got the string 'not a vector'."),
    ("[0, 0, nan, 0, 0, 0, 0, 0]", "not_finite", "embedding: expected finite numbers, got nan at position 2."),
    ([10**400] + [0] * 7, "out_of_range", f"embedding: {OUT_OF_RANGE} 1e+400 at position 0."),
    ("[1" + "0" * 400 + ", 0, 0, 0, 0, 0, 0, 0]", "out_of_range", f"embedding: {OUT_OF_RANGE} 1e+400 at position 0."),
    ([0] * 7 + [Decimal("-1e400")], "out_of_range", f"embedding: {OUT_OF_RANGE} -1e+400 at position 7."),
    (None, "null", "This field cannot be null."),
]
BAD_IDS = [
    "length", "nan", "inf", "string-element", "nested", "2d", "0d", "scalar", "text", "nan-text",
    "huge-int", "400-digits", "huge-decimal", "null",
]


def table_rows():
    return list(Item.objects.values_list("pk", "name"))


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "code", "message"), BAD_VALUES, ids=BAD_IDS)
def test_full_clean_refuses(value, code, message):
    item = Item(name="bad", embedding=value)
    with pytest.raises(ValidationError) as caught:
        item.full_clean()
    [error] = caught.value.error_dict["embedding"]
    assert error.code == code
    assert error.messages == [message]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("value", "code", "message"), BAD_VALUES[:-1], ids=BAD_IDS[:-1])
def test_writes_refuse_and_leave_the_table_unchanged(value, code, message):
    good = Item.objects.create(name="good", embedding=[0] * 8)
    before = table_rows()

    with pytest.raises(ValidationError) as caught:
        Item.objects.create(name="bad", embedding=value)
    assert caught.value.messages == [message] and caught.value.code == code
    assert table_rows() == before

    # bulk_create: the bad row is last and the batches are small, yet nothing
    # of the earlier batches is written either.
    rows = [Item(name=f"ok{i}", embedding=[i] * 8) for i in range(5)] + [Item(name="bad", embedding=value)]
    with pytest.raises(ValidationError) as caught:
        Item.objects.bulk_create(rows, batch_size=2)
    assert caught.value.messages == [message]
    assert table_rows() == before

    good.embedding = value
    with pytest.raises(ValidationError):
        good.save()
    with pytest.raises(ValidationError):
        Item.objects.filter(pk=good.pk).update(embedding=value)
    with pytest.raises(ValidationError):
        Item.objects.bulk_update([Item(pk=good.pk, name="renamed", embedding=[1] * 8), good], ["name", "embedding"], batch_size=1)
    assert table_rows() == before
    np.testing.assert_array_equal(Item.objects.get(pk=good.pk).embedding, np.zeros(8))


@pytest.mark.django_db
def test_a_refusal_inside_a_transaction_can_be_recovered_from():
    with transaction.atomic():
        # As with any error in save(), a savepoint lets the transaction go on.
        with pytest.raises(ValidationError), transaction.atomic():
            Item.objects.create(embedding=[1, 2])
        # bulk_create refuses before Django starts writing: no savepoint needed.
        with pytest.raises(ValidationError):
            Item.objects.bulk_create([Item(embedding=[1, 2])])
        Item.objects.create(name="after", embedding=[1] * 8)
    assert list(Item.objects.values_list("name", flat=True)) == ["after"]


@pytest.mark.django_db
def test_null_vector_refused_on_a_not_null_field():
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Item.objects.create(name="none", embedding=None)
    assert Item.objects.count() == 0


def test_clean_blank_nullable_field():
    field = Document._meta.get_field("embedding")
    assert field.clean(None, None) is None
    np.testing.assert_array_equal(field.clean("[1, 2, 3]", None), [1, 2, 3])
