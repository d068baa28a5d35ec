"""BitField, HammingDistance and JaccardDistance: pgvector's bit strings, answered by the exact scan."""

import re

import pytest
from django.core import serializers
from django.core.exceptions import FieldError, ValidationError
from django.db import NotSupportedError, models, transaction
from django.db.models import Avg
from django.test.utils import isolate_apps

from tests.django_app.models import Item
from vectorindex import BitField, HammingDistance, JaccardDistance, L2Distance, VectorField, VectorIndex
from vectorindex.admin import preview_html
from vectorindex.checks import check_model_vector_indexes


def test_a_bit_field_is_declared_by_its_length():
    field = BitField(length=5, null=True)
    assert field.length == 5
    assert field.deconstruct()[1:] == ("vectorindex.BitField", [], {"length": 5, "null": True})
    with pytest.raises(ValueError, match="BitField.length must be an integer from 1 to 16383, got 0"):
        BitField(length=0)


@pytest.mark.django_db
def test_bits_go_in_as_text_or_sequences_and_come_back_as_text(settings):
    settings.VECTORINDEX = {"VECTORS_AS_LISTS": True}  # bits stay text, as pgvector-python 1.0's
    Item.objects.create(id=1, binary_embedding="101")
    Item.objects.create(id=2, binary_embedding=[True, False, False])
    Item.objects.create(id=3, binary_embedding=(0, 1, 1))
    assert list(Item.objects.order_by("pk").values_list("binary_embedding", flat=True)) == ["101", "100", "011"]
    for bad, message in [
        ("10", "expected 3 bits, got 2"),
        ("1x1", "expected a string of 0s and 1s, got '1x1'"),
        ([1, 2, 0], "expected bits (0 or 1, or booleans), got [1, 2, 0]"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)), transaction.atomic():
            Item.objects.create(binary_embedding=bad)


@pytest.mark.django_db
def test_hamming_and_jaccard_distances_as_pgvector_computes_them():
    for pk, bits in [(1, "000"), (2, "101"), (3, "111"), (4, None)]:
        Item.objects.create(id=pk, binary_embedding=bits)
    hamming = HammingDistance("binary_embedding", "101")
    jaccard = JaccardDistance("binary_embedding", [1, 0, 1])
    rows = Item.objects.annotate(h=hamming, j=jaccard).filter(binary_embedding__isnull=False).order_by(jaccard)
    assert [(r.pk, r.h, r.j) for r in rows] == [(2, 0, 0), (3, 1, pytest.approx(1 / 3)), (1, 2, 1)]
    assert [r.pk for r in Item.objects.alias(h=hamming).filter(h__lte=1).order_by("pk")] == [2, 3]
    assert [r.pk for r in Item.objects.order_by(hamming)[:1]] == [2]


@pytest.mark.django_db
def test_distances_of_the_wrong_kind_and_averages_of_bits_are_refused():
    with pytest.raises(FieldError, match="L2Distance: 'binary_embedding' is a BitField, not a VectorField, "
                       "HalfVectorField or SparseVectorField; bit strings are compared by HammingDistance or JaccardDistance"):
        list(Item.objects.order_by(L2Distance("binary_embedding", [1, 0, 1])))
    with pytest.raises(FieldError, match="HammingDistance: 'embedding' is a VectorField, not a BitField; "
                       "HammingDistance and JaccardDistance compare a BitField's bits"):
        list(Item.objects.order_by(HammingDistance("embedding", "101")))
    with pytest.raises(ValueError, match="HammingDistance: query vector: expected a string of 0s and 1s"):
        HammingDistance("binary_embedding", "10a")
    with pytest.raises(NotSupportedError, match=r"Avg\('binary_embedding'\): bit strings have no average or sum"):
        Item.objects.aggregate(Avg("binary_embedding"))


@isolate_apps("tests.testapp")
def test_no_index_serves_bits():
    class Flags(models.Model):
        bits = BitField(length=8)
        embedding = VectorField(dimensions=2)

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["bits"], name="flags_bits")]

    [error] = [m for m in check_model_vector_indexes(Flags) if m.id == "vectorindex.E102"]
    assert error.msg == (
        "testapp.Flags: VectorIndex 'flags_bits' is on 'bits', which is a BitField, not a VectorField or "
        "HalfVectorField (no index serves bit strings: HammingDistance and JaccardDistance are answered by "
        "the exact scan)."
    )


@pytest.mark.django_db
def test_bits_in_fixtures_and_the_admin():
    Item.objects.create(id=1, binary_embedding="110")
    data = serializers.serialize("json", Item.objects.all())
    assert '"binary_embedding": "110"' in data
    Item.objects.all().delete()
    for obj in serializers.deserialize("json", data):
        obj.save()
    assert Item.objects.get(pk=1).binary_embedding == "110"
    assert str(preview_html("110")) == '<span title="3 bits: 110">3 bits: 110</span>'
    long = "10" * 50
    assert "100 bits: " + "10" * 32 + "…" in str(preview_html(long)) and long in str(preview_html(long))
