"""pgvector-python's own Django tests (tests/test_django.py at v0.4.2), run against vectorindex.

The model is declared as pgvector declares it (tests/django_app/models.py);
only the import line differs. The database is the suite's (SQLite, or
MariaDB from DATABASE_URL) and pytest-django's ``django_db`` mark replaces
the module's own settings and SQL set-up. Left out, and named
where they were: the tests of PostgreSQL's ArrayField.
"""

from math import sqrt
from unittest import mock

import numpy as np
import pytest
from django.core import serializers
from django.db.models import Avg, Sum
from django.db.models.functions import Cast
from django.forms import ModelForm

from tests.django_app.models import Item
from vectorindex import (
    CosineDistance,
    HalfVector,
    HalfVectorField,
    HammingDistance,
    JaccardDistance,
    L1Distance,
    L2Distance,
    MaxInnerProduct,
    SparseVector,
)


def create_items():
    Item(id=1, embedding=[1, 1, 1], half_embedding=[1, 1, 1], binary_embedding="000", sparse_embedding=SparseVector([1, 1, 1])).save()
    Item(id=2, embedding=[2, 2, 2], half_embedding=[2, 2, 2], binary_embedding="101", sparse_embedding=SparseVector([2, 2, 2])).save()
    Item(id=3, embedding=[1, 1, 2], half_embedding=[1, 1, 2], binary_embedding="111", sparse_embedding=SparseVector([1, 1, 2])).save()


class VectorForm(ModelForm):
    class Meta:
        model = Item
        fields = ["embedding"]


class HalfVectorForm(ModelForm):
    class Meta:
        model = Item
        fields = ["half_embedding"]


class BitForm(ModelForm):
    class Meta:
        model = Item
        fields = ["binary_embedding"]


class SparseVectorForm(ModelForm):
    class Meta:
        model = Item
        fields = ["sparse_embedding"]


@pytest.mark.django_db
class TestDjango:
    def setup_method(self):
        Item.objects.all().delete()

    def test_vector(self):
        Item(id=1, embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        assert np.array_equal(item.embedding, [1, 2, 3])
        assert item.embedding.dtype == np.float32

    def test_vector_l2_distance(self):
        create_items()
        distance = L2Distance("embedding", [1, 1, 1])
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, sqrt(3)]

    def test_vector_max_inner_product(self):
        create_items()
        distance = MaxInnerProduct("embedding", [1, 1, 1])
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [2, 3, 1]
        assert [v.distance for v in items] == [-6, -4, -3]

    def test_vector_cosine_distance(self):
        create_items()
        distance = CosineDistance("embedding", [1, 1, 1])
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 2, 3]
        assert [v.distance for v in items] == [0, 0, 0.05719095841793653]

    def test_vector_l1_distance(self):
        create_items()
        distance = L1Distance("embedding", [1, 1, 1])
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, 3]

    def test_halfvec(self):
        Item(id=1, half_embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        assert item.half_embedding == HalfVector([1, 2, 3])

    def test_halfvec_l2_distance(self):
        create_items()
        distance = L2Distance("half_embedding", HalfVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, sqrt(3)]

    def test_halfvec_max_inner_product(self):
        create_items()
        distance = MaxInnerProduct("half_embedding", HalfVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [2, 3, 1]
        assert [v.distance for v in items] == [-6, -4, -3]

    def test_halfvec_cosine_distance(self):
        create_items()
        distance = CosineDistance("half_embedding", HalfVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 2, 3]
        assert [v.distance for v in items] == [0, 0, 0.05719095841793653]

    def test_halfvec_l1_distance(self):
        create_items()
        distance = L1Distance("half_embedding", HalfVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, 3]

    def test_bit(self):
        Item(id=1, binary_embedding="101").save()
        item = Item.objects.get(pk=1)
        assert item.binary_embedding == "101"

    def test_bit_hamming_distance(self):
        create_items()
        distance = HammingDistance("binary_embedding", "101")
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [2, 3, 1]
        assert [v.distance for v in items] == [0, 1, 2]

    def test_bit_jaccard_distance(self):
        create_items()
        distance = JaccardDistance("binary_embedding", "101")
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [2, 3, 1]
        # assert [v.distance for v in items] == [0, 1/3, 1]

    def test_sparsevec(self):
        Item(id=1, sparse_embedding=SparseVector([1, 2, 3])).save()
        item = Item.objects.get(pk=1)
        assert item.sparse_embedding == SparseVector([1, 2, 3])

    def test_sparsevec_l2_distance(self):
        create_items()
        distance = L2Distance("sparse_embedding", SparseVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, sqrt(3)]

    def test_sparsevec_max_inner_product(self):
        create_items()
        distance = MaxInnerProduct("sparse_embedding", SparseVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [2, 3, 1]
        assert [v.distance for v in items] == [-6, -4, -3]

    def test_sparsevec_cosine_distance(self):
        create_items()
        distance = CosineDistance("sparse_embedding", SparseVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 2, 3]
        assert [v.distance for v in items] == [0, 0, 0.05719095841793653]

    def test_sparsevec_l1_distance(self):
        create_items()
        distance = L1Distance("sparse_embedding", SparseVector([1, 1, 1]))
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, 3]

    def test_filter(self):
        create_items()
        distance = L2Distance("embedding", [1, 1, 1])
        items = Item.objects.alias(distance=distance).filter(distance__lt=1)
        assert [v.id for v in items] == [1]

    def test_vector_avg(self):
        avg = Item.objects.aggregate(Avg("embedding"))["embedding__avg"]
        assert avg is None
        Item(embedding=[1, 2, 3]).save()
        Item(embedding=[4, 5, 6]).save()
        avg = Item.objects.aggregate(Avg("embedding"))["embedding__avg"]
        assert np.array_equal(avg, [2.5, 3.5, 4.5])

    def test_vector_sum(self):
        sum = Item.objects.aggregate(Sum("embedding"))["embedding__sum"]
        assert sum is None
        Item(embedding=[1, 2, 3]).save()
        Item(embedding=[4, 5, 6]).save()
        sum = Item.objects.aggregate(Sum("embedding"))["embedding__sum"]
        assert np.array_equal(sum, [5, 7, 9])

    def test_halfvec_avg(self):
        avg = Item.objects.aggregate(Avg("half_embedding"))["half_embedding__avg"]
        assert avg is None
        Item(half_embedding=[1, 2, 3]).save()
        Item(half_embedding=[4, 5, 6]).save()
        avg = Item.objects.aggregate(Avg("half_embedding"))["half_embedding__avg"]
        assert avg == HalfVector([2.5, 3.5, 4.5])

    def test_halfvec_sum(self):
        sum = Item.objects.aggregate(Sum("half_embedding"))["half_embedding__sum"]
        assert sum is None
        Item(half_embedding=[1, 2, 3]).save()
        Item(half_embedding=[4, 5, 6]).save()
        sum = Item.objects.aggregate(Sum("half_embedding"))["half_embedding__sum"]
        assert sum == HalfVector([5, 7, 9])

    def test_serialization(self):
        create_items()
        items = Item.objects.all()
        for format in ["json", "xml"]:
            data = serializers.serialize(format, items)
            with mock.patch("django.core.serializers.python.apps.get_model") as get_model:
                get_model.return_value = Item
                for obj in serializers.deserialize(format, data):
                    obj.save()

    def test_vector_form(self):
        form = VectorForm(data={"embedding": "[1, 2, 3]"})
        assert form.is_valid()
        assert 'value="[1, 2, 3]"' in form.as_div()

    def test_vector_form_instance(self):
        Item(id=1, embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = VectorForm(instance=item)
        assert 'value="[1.0, 2.0, 3.0]"' in form.as_div()

    def test_vector_form_save(self):
        Item(id=1, embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = VectorForm(instance=item, data={"embedding": "[4, 5, 6]"})
        assert form.has_changed()
        assert form.is_valid()
        assert form.save()
        assert np.array_equal(Item.objects.get(pk=1).embedding, [4, 5, 6])

    def test_vector_form_save_missing(self):
        Item(id=1).save()
        item = Item.objects.get(pk=1)
        form = VectorForm(instance=item, data={"embedding": ""})
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).embedding is None

    def test_halfvec_form(self):
        form = HalfVectorForm(data={"half_embedding": "[1, 2, 3]"})
        assert form.is_valid()
        assert 'value="[1, 2, 3]"' in form.as_div()

    def test_halfvec_form_instance(self):
        Item(id=1, half_embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = HalfVectorForm(instance=item)
        assert 'value="[1.0, 2.0, 3.0]"' in form.as_div()

    def test_halfvec_form_save(self):
        Item(id=1, half_embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = HalfVectorForm(instance=item, data={"half_embedding": "[4, 5, 6]"})
        assert form.has_changed()
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).half_embedding == HalfVector([4, 5, 6])

    def test_halfvec_form_save_missing(self):
        Item(id=1).save()
        item = Item.objects.get(pk=1)
        form = HalfVectorForm(instance=item, data={"half_embedding": ""})
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).half_embedding is None

    def test_bit_form(self):
        form = BitForm(data={"binary_embedding": "101"})
        assert form.is_valid()
        assert 'value="101"' in form.as_div()

    def test_bit_form_instance(self):
        Item(id=1, binary_embedding="101").save()
        item = Item.objects.get(pk=1)
        form = BitForm(instance=item)
        assert 'value="101"' in form.as_div()

    def test_bit_form_save(self):
        Item(id=1, binary_embedding="101").save()
        item = Item.objects.get(pk=1)
        form = BitForm(instance=item, data={"binary_embedding": "010"})
        assert form.has_changed()
        assert form.is_valid()
        assert form.save()
        assert "010" == Item.objects.get(pk=1).binary_embedding

    def test_bit_form_save_missing(self):
        Item(id=1).save()
        item = Item.objects.get(pk=1)
        form = BitForm(instance=item, data={"binary_embedding": ""})
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).binary_embedding is None

    def test_sparsevec_form(self):
        form = SparseVectorForm(data={"sparse_embedding": "{1:1,2:2,3:3}/3"})
        assert form.is_valid()
        assert 'value="{1:1,2:2,3:3}/3"' in form.as_div()

    def test_sparsevec_form_instance(self):
        Item(id=1, sparse_embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = SparseVectorForm(instance=item)
        # TODO improve
        assert 'value="{1:1.0,2:2.0,3:3.0}/3"' in form.as_div()

    def test_sparsevec_form_save(self):
        Item(id=1, sparse_embedding=[1, 2, 3]).save()
        item = Item.objects.get(pk=1)
        form = SparseVectorForm(instance=item, data={"sparse_embedding": "{1:4,2:5,3:6}/3"})
        assert form.has_changed()
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).sparse_embedding == SparseVector([4, 5, 6])

    def test_sparesevec_form_save_missing(self):
        Item(id=1).save()
        item = Item.objects.get(pk=1)
        form = SparseVectorForm(instance=item, data={"sparse_embedding": ""})
        assert form.is_valid()
        assert form.save()
        assert Item.objects.get(pk=1).sparse_embedding is None

    def test_clean(self):
        item = Item(id=1, embedding=[1, 2, 3], half_embedding=[1, 2, 3], binary_embedding="101", sparse_embedding=SparseVector([1, 2, 3]))
        item.full_clean()

    def test_get_or_create(self):
        Item.objects.get_or_create(embedding=[1, 2, 3])

    def test_missing(self):
        Item().save()
        assert Item.objects.first().embedding is None
        assert Item.objects.first().half_embedding is None
        assert Item.objects.first().binary_embedding is None
        assert Item.objects.first().sparse_embedding is None

    # test_vector_array, test_double_array, test_numeric_array: PostgreSQL's ArrayField.
    def test_half_precision(self):
        create_items()
        distance = L2Distance(Cast("embedding", HalfVectorField(dimensions=3)), [1, 1, 1])
        items = Item.objects.annotate(distance=distance).order_by(distance)
        assert [v.id for v in items] == [1, 3, 2]
        assert [v.distance for v in items] == [0, 1, sqrt(3)]
