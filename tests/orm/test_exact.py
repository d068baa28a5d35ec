"""Distance expressions answered exactly, compared with a numpy reference.

The data is random; the reference computes every distance in float64 and sorts
with the primary key as the tie-break, which is what the exact path promises.
"""

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from django.core.exceptions import FieldError
from django.db import NotSupportedError, connection, models
from django.db.models import Avg, Count, F, Q, Sum
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import Category, Document, Item, Plain
from vectorindex import CosineDistance, L1Distance, L2Distance, MaxInnerProduct

DISTANCES = {
    "l2": L2Distance,
    "cosine": CosineDistance,
    "ip": MaxInnerProduct,
    "l1": L1Distance,
}
N = 600
D = 8


def reference_distances(metric, matrix, query):
    matrix = matrix.astype(np.float64)
    # Query vectors are float32 too, as in pgvector.
    query = np.asarray(query, dtype=np.float32).astype(np.float64)
    if metric == "l2":
        return np.sqrt(((matrix - query) ** 2).sum(axis=1))
    if metric == "l1":
        return np.abs(matrix - query).sum(axis=1)
    if metric == "ip":
        return -(matrix @ query)
    similarity = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    return 1 - np.clip(similarity, -1, 1)


@pytest.fixture(autouse=True)
def small_chunks(settings):
    # Many chunks and many fetch batches even on a few hundred rows, so that
    # the chunked scan, the top-k pruning and batching are all exercised.
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZE": 37, "RESULT_BATCH_SIZE": 29}


@pytest.fixture
def data(db):
    rng = np.random.default_rng(42)
    matrix = rng.normal(size=(N, D)).astype(np.float32)
    categories = [Category.objects.create(name=name) for name in ("a", "b", "c")]
    items = Item.objects.bulk_create(
        Item(
            name=f"item{i}",
            group=i % 20,
            category=categories[i % 3],
            embedding=matrix[i],
        )
        for i in range(N)
    )
    pks = np.array([item.pk for item in items])
    groups = np.arange(N) % 20
    query = rng.normal(size=D)
    return matrix, pks, groups, query


def expected_order(values, pks, mask=None, descending=False):
    if mask is None:
        mask = np.ones(len(values), bool)
    index = np.flatnonzero(mask)
    keys = -values[index] if descending else values[index]
    return index[np.lexsort((pks[index], keys))]


@pytest.mark.parametrize("metric", DISTANCES)
def test_order_by_top_k_matches_numpy(data, metric):
    matrix, pks, groups, query = data
    values = reference_distances(metric, matrix, query)
    result = list(Item.objects.order_by(DISTANCES[metric]("embedding", query))[:10])
    assert [item.pk for item in result] == pks[expected_order(values, pks)[:10]].tolist()


@pytest.mark.parametrize("metric", DISTANCES)
def test_annotate_with_filter_matches_numpy(data, metric):
    matrix, pks, groups, query = data
    values = reference_distances(metric, matrix, query)
    mask = groups == 3
    result = list(
        Item.objects.filter(group=3)
        .annotate(distance=DISTANCES[metric]("embedding", query))
        .order_by("distance")[:7]
    )
    order = expected_order(values, pks, mask)[:7]
    assert [item.pk for item in result] == pks[order].tolist()
    np.testing.assert_allclose([item.distance for item in result], values[order], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("metric", DISTANCES)
def test_alias_filter_on_distance_matches_numpy(data, metric):
    matrix, pks, groups, query = data
    values = reference_distances(metric, matrix, query)
    threshold = float(np.quantile(values, 0.1))
    qs = Item.objects.alias(distance=DISTANCES[metric]("embedding", query)).filter(distance__lt=threshold)
    assert sorted(qs.values_list("pk", flat=True)) == sorted(pks[values < threshold].tolist())
    assert qs.count() == int((values < threshold).sum())
    # The same, combined with an ordinary filter and ordered by another field.
    combined = qs.filter(group__lt=10).order_by("-name")
    expected = sorted(
        (f"item{i}" for i in np.flatnonzero((values < threshold) & (groups < 10))), reverse=True
    )
    assert [item.name for item in combined] == expected


@pytest.mark.parametrize("metric", DISTANCES)
def test_annotate_every_row_without_ordering(data, metric):
    matrix, pks, groups, query = data
    values = reference_distances(metric, matrix, query)
    by_pk = {int(pk): value for pk, value in zip(pks, values)}
    rows = Item.objects.annotate(distance=DISTANCES[metric]("embedding", query))
    seen = {item.pk: item.distance for item in rows}
    assert seen.keys() == by_pk.keys()
    np.testing.assert_allclose([seen[pk] for pk in by_pk], list(by_pk.values()), rtol=1e-12, atol=1e-12)


def test_descending_reverse_first_last_and_offsets(data):
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    ascending = pks[expected_order(values, pks)].tolist()
    descending = pks[expected_order(values, pks, descending=True)].tolist()
    qs = Item.objects.annotate(d=L2Distance("embedding", query))
    assert [i.pk for i in qs.order_by("-d")[:5]] == descending[:5]
    assert [i.pk for i in qs.order_by(L2Distance("embedding", query).desc())[:5]] == descending[:5]
    assert [i.pk for i in qs.order_by("d").reverse()[:5]] == descending[:5]
    assert qs.order_by("d").first().pk == ascending[0]
    assert qs.order_by("d").last().pk == ascending[-1]
    assert [i.pk for i in qs.order_by("d")[100:105]] == ascending[100:105]
    assert qs.order_by("d")[3].pk == ascending[3]
    assert [i.pk for i in qs.order_by("d")] == ascending
    assert qs.order_by("d")[10:20].count() == 10
    assert qs.order_by("d")[595:700].count() == 5


def test_values_values_list_iterator_and_related(data):
    matrix, pks, groups, query = data
    values = reference_distances("cosine", matrix, query)
    order = expected_order(values, pks)[:4]
    qs = Item.objects.annotate(distance=CosineDistance("embedding", query)).order_by("distance")
    assert list(qs.values_list("name", flat=True)[:4]) == [f"item{i}" for i in order]
    rows = list(qs.values("name", "distance")[:4])
    assert [row["name"] for row in rows] == [f"item{i}" for i in order]
    np.testing.assert_allclose([row["distance"] for row in rows], values[order], rtol=1e-12)
    named = list(qs.values_list("distance", "name", named=True)[:2])
    assert named[0].name == f"item{order[0]}"
    assert [i.pk for i in qs[:4].iterator(chunk_size=2)] == pks[order].tolist()
    with CaptureQueriesContext(connection) as queries:
        result = list(qs.select_related("category")[:4])
        names = [item.category.name for item in result]
    assert names == [["a", "b", "c"][i % 3] for i in order]
    assert len(queries) == 2  # the scan, and one fetch with the join
    prefetched = list(Category.objects.prefetch_related("item_set").order_by("name"))
    assert len(prefetched[0].item_set.all()) == N // 3


def test_filter_on_related_field_and_exclude(data):
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    in_b = np.arange(N) % 3 == 1
    qs = Item.objects.filter(category__name="b").exclude(group=1).order_by(L2Distance("embedding", query))
    expected = expected_order(values, pks, in_b & (groups != 1))[:5]
    assert [i.pk for i in qs[:5]] == pks[expected].tolist()


def test_numpy_side_conditions_use_three_valued_logic(data):
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    low, high = np.quantile(values, [0.2, 0.6])
    qs = Item.objects.alias(d=L2Distance("embedding", query))
    cases = {
        "range": (qs.filter(d__range=(low, high)), (values >= low) & (values <= high)),
        "or": (qs.filter(Q(d__lt=low) | Q(d__gt=high)), (values < low) | (values > high)),
        "exclude": (qs.exclude(d__lt=low), ~(values < low)),
        "not-and": (qs.filter(~Q(d__gte=low, d__lte=high)), ~((values >= low) & (values <= high))),
        "gte-lte": (qs.filter(d__gte=low).filter(d__lte=high), (values >= low) & (values <= high)),
        "isnull": (qs.filter(d__isnull=False), np.ones(N, bool)),
    }
    for name, (queryset, mask) in cases.items():
        assert sorted(queryset.values_list("pk", flat=True)) == sorted(pks[mask].tolist()), name


def test_distance_conditions_on_numbers_beyond_float_range_and_null_bounds(data):
    """Django's FloatField raises OverflowError for 10**400; every distance is
    below it. A NULL bound of a range is unknown, as in SQL's BETWEEN."""
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    middle = float(np.median(values))
    qs = Item.objects.alias(d=L2Distance("embedding", query))
    cases = {
        "lt-huge": (qs.filter(d__lt=10**400), np.ones(N, bool)),
        "gt-huge": (qs.filter(d__gt=10**400), np.zeros(N, bool)),
        "gt-huge-negative": (qs.filter(d__gt=-(10**400)), np.ones(N, bool)),
        "range-huge": (qs.filter(d__range=(-(10**400), middle)), values <= middle),
        "in-huge": (qs.filter(d__in=[10**400, -(10**400)]), np.zeros(N, bool)),
        "exclude-range-null-high": (qs.exclude(d__range=(middle, None)), values < middle),
        "exclude-range-null-low": (qs.exclude(d__range=(None, middle)), values > middle),
        "range-null": (qs.filter(d__range=(None, middle)), np.zeros(N, bool)),
        "exclude-range-nulls": (qs.exclude(d__range=(None, None)), np.zeros(N, bool)),
    }
    for name, (queryset, mask) in cases.items():
        assert sorted(queryset.values_list("pk", flat=True)) == sorted(pks[mask].tolist()), name
    with pytest.raises(ValueError, match="^Field 'L2Distance' expected a number but got 'x'.$"):
        qs.filter(d__lt="x")


def test_two_distances_in_one_query(data):
    matrix, pks, groups, query = data
    other = -query
    l2 = reference_distances("l2", matrix, query)
    ip = reference_distances("ip", matrix, other)
    qs = (
        Item.objects.annotate(near=L2Distance("embedding", query), score=MaxInnerProduct("embedding", other))
        .filter(near__lt=float(np.median(l2)))
        .order_by("score")[:5]
    )
    expected = expected_order(ip, pks, l2 < np.median(l2))[:5]
    assert [i.pk for i in qs] == pks[expected].tolist()
    np.testing.assert_allclose([i.near for i in qs], l2[expected], rtol=1e-12)


def test_ties_are_broken_by_later_ordering_terms(db):
    for name in ["b", "a", "c"]:
        Item.objects.create(name=name, embedding=[1] * 8)
    Item.objects.create(name="z", embedding=[0] * 8)
    qs = Item.objects.order_by(L2Distance("embedding", [0] * 8), "-name")
    assert [i.name for i in qs] == ["z", "c", "b", "a"]
    with pytest.raises(NotSupportedError, match="order_by\\(\\) must list distances before other fields"):
        list(Item.objects.order_by("name", L2Distance("embedding", [0] * 8)))


def test_exists_count_get_and_contains(data):
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    qs = Item.objects.alias(d=L2Distance("embedding", query))
    nearest = int(pks[np.argmin(values)])
    assert qs.filter(d__lt=float(values.min()) + 1e-9).get().pk == nearest
    assert qs.filter(d__lt=0).exists() is False
    assert qs.filter(d__lte=float(values.min()) + 1e-9).exists() is True
    assert qs.filter(d__lt=0).count() == 0
    assert qs.contains(Item.objects.get(pk=nearest))


def test_update_and_delete_through_a_distance_filter(data):
    matrix, pks, groups, query = data
    values = reference_distances("l2", matrix, query)
    near = values < np.quantile(values, 0.05)
    qs = Item.objects.alias(d=L2Distance("embedding", query)).filter(d__lt=float(np.quantile(values, 0.05)))
    assert qs.update(name="near") == int(near.sum())
    assert Item.objects.filter(name="near").count() == int(near.sum())
    deleted, per_model = qs.delete()
    assert deleted == int(near.sum()) and per_model == {"testapp.Item": int(near.sum())}
    assert Item.objects.count() == N - int(near.sum())


def test_null_vectors_sort_last_and_give_none(db):
    Document.objects.create(title="none")
    Document.objects.create(title="far", embedding=[10, 0, 0])
    Document.objects.create(title="near", embedding=[1, 0, 0])
    Document.objects.create(title="zero", embedding=[0, 0, 0])
    qs = Document.objects.annotate(d=L2Distance("embedding", [0, 0, 0]))
    assert [(d.title, d.d) for d in qs.order_by("d")] == [("zero", 0.0), ("near", 1.0), ("far", 10.0), ("none", None)]
    assert [d.title for d in qs.order_by("-d")] == ["none", "far", "near", "zero"]
    assert [d.title for d in qs.order_by(F("d").asc(nulls_first=True))] == ["none", "zero", "near", "far"]
    assert qs.filter(d__isnull=True).get().title == "none"
    # A zero vector has no direction: its cosine distance is None, like NULL.
    cosine = Document.objects.annotate(c=CosineDistance("embedding", [1, 0, 0])).order_by("c")
    assert [(d.title, d.c) for d in cosine] == [
        ("far", 0.0),  # ties are broken by primary key
        ("near", 0.0),
        ("none", None),
        ("zero", None),
    ]


def test_none_query_vector_gives_none(db):
    Document.objects.create(title="x", embedding=[1, 2, 3])
    assert Document.objects.annotate(d=L2Distance("embedding", None)).get().d is None


def test_other_vector_field_and_related_path(db):
    doc = Document.objects.create(title="x", embedding=[1, 0, 0], summary_embedding=[0, 1, 0])
    got = Document.objects.annotate(a=L2Distance("summary_embedding", [0, 1, 0]), b=L2Distance("embedding", [0, 1, 0])).get()
    assert got.pk == doc.pk and got.a == 0.0 and math.isclose(got.b, math.sqrt(2))


@pytest.mark.parametrize("distance", [L2Distance, CosineDistance, MaxInnerProduct, L1Distance])
@pytest.mark.parametrize(
    ("vector", "problem"),
    [
        ([10**400] + [0] * 7, "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 0"),
        ([0] * 7 + [-(10**400)], "expected numbers within float32 range (±3.402823e+38), got -1e+400 at position 7"),
        ([Decimal("1e400")] + [0] * 7, "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 0"),
        ([Fraction(10**400)] + [0] * 7, "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 0"),
        ("[1" + "0" * 400 + ", 0, 0, 0, 0, 0, 0, 0]", "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 0"),
        ("[0, 1e400, 0, 0, 0, 0, 0, 0]", "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 1"),
        ("[0, 0, inf, 0, 0, 0, 0, 0]", "expected finite numbers, got inf at position 2"),
        ("[0, 0, 0, nan, 0, 0, 0, 0]", "expected finite numbers, got nan at position 3"),
    ],
    ids=["int", "negative-int", "decimal", "fraction", "400-digits", "1e400-text", "inf-text", "nan-text"],
)
def test_a_query_vector_a_float32_cannot_hold_is_refused_like_any_bad_query_vector(distance, vector, problem):
    with pytest.raises(ValueError) as caught:
        Item.objects.order_by(distance("embedding", vector))
    assert str(caught.value) == f"{distance.__name__}: query vector: {problem}."


def test_clear_errors(db):
    with pytest.raises(ValueError, match="L2Distance: the query vector has 3 dimensions, but 'embedding' has 8."):
        Item.objects.annotate(d=L2Distance("embedding", [1, 2, 3]))
    with pytest.raises(ValueError, match="L2Distance: the query vector has 3 dimensions, but 'embedding' has 8."):
        list(Item.objects.order_by(L2Distance("embedding", [1, 2, 3])))
    with pytest.raises(ValueError, match="CosineDistance: query vector: expected finite numbers, got nan at position 0."):
        CosineDistance("embedding", [float("nan")])
    with pytest.raises(FieldError, match="L2Distance: 'name' is a CharField, not a VectorField, HalfVectorField or SparseVectorField."):
        Item.objects.annotate(d=L2Distance("name", [1] * 8))
    with pytest.raises(TypeError, match=r"L2Distance: the first argument must be a field name, F\(\) or Cast\(\) of one, got 42"):
        L2Distance(42, [1])
    with pytest.raises(NotSupportedError, match="combined with other conditions on distances by OR or NOT, but not with ordinary fields"):
        list(Item.objects.alias(d=L2Distance("embedding", [0] * 8)).filter(Q(d__lt=1) | Q(group=1)))
    with pytest.raises(NotSupportedError, match="a distance is combined here only with numbers, numeric fields and other distances"):
        list(Item.objects.alias(d=L2Distance("embedding", [0] * 8)).annotate(e=F("d") * F("name")))
    with pytest.raises(NotSupportedError, match="cannot be combined with aggregation"):
        list(Item.objects.values("group").annotate(n=Count("pk"), d=L2Distance("embedding", [0] * 8)))
    with pytest.raises(NotSupportedError, match="computed in numpy, not in SQL"):
        list(Category.objects.filter(item__in=Item.objects.alias(d=L2Distance("embedding", [0] * 8)).filter(d__lt=1)))


def test_djangos_own_manager_answers_distances(db):
    """Plain declares no manager: Django's ``objects`` is given querysets that understand distances."""
    far, near = Plain.objects.create(embedding=[5, 5]), Plain.objects.create(embedding=[1, 2])
    assert list(Plain.objects.order_by(L2Distance("embedding", [0, 0]))) == [near, far]
    assert list(Plain.objects.approximate(probes=4).filter(embedding__isnull=False).order_by(L2Distance("embedding", [9, 9]))) == [far, near]


def test_a_queryset_made_without_the_manager_gets_a_clear_error(db):
    Plain.objects.create(embedding=[1, 2])
    with pytest.raises(NotSupportedError, match=r"through a manager of Plain \(any manager whose get_queryset\(\) starts from super\(\).get_queryset\(\)"):
        list(models.QuerySet(Plain).order_by(L2Distance("embedding", [0, 0])))


def test_aggregate_average_and_sum_of_vectors(data):
    matrix, pks, groups, query = data
    result = Item.objects.filter(group__lt=5).aggregate(Avg("embedding"), total=Sum("embedding"), n=Count("pk"))
    chosen = matrix[groups < 5].astype(np.float64)
    assert result["embedding__avg"].dtype == np.float32
    np.testing.assert_allclose(result["embedding__avg"], chosen.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result["total"], chosen.sum(axis=0), rtol=1e-6)
    assert result["n"] == int((groups < 5).sum())
    values = reference_distances("l2", matrix, query)
    near = values < np.median(values)
    filtered = Item.objects.alias(d=L2Distance("embedding", query)).filter(d__lt=float(np.median(values)))
    np.testing.assert_allclose(filtered.aggregate(Avg("embedding"))["embedding__avg"], matrix[near].astype(np.float64).mean(axis=0), rtol=1e-6)
    assert Item.objects.none().aggregate(Avg("embedding")) == {"embedding__avg": None}
    with pytest.raises(NotSupportedError, match="aggregate\\(\\) over ordinary fields cannot be combined with distances"):
        filtered.aggregate(Count("pk"))


def test_aggregate_skips_null_vectors(db):
    Document.objects.create(embedding=[1, 2, 3])
    Document.objects.create(embedding=None)
    Document.objects.create(embedding=[3, 4, 5])
    np.testing.assert_array_equal(Document.objects.aggregate(a=Avg("embedding"))["a"], [2, 3, 4])


def test_transaction_sees_its_own_writes(db):
    from django.db import transaction

    with transaction.atomic():
        Item.objects.create(name="mine", embedding=[5] * 8)
        assert Item.objects.order_by(L2Distance("embedding", [5] * 8)).first().name == "mine"
