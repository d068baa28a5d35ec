"""pgvector.django's names, declared as its users declare them: HnswIndex, IvfflatIndex, VectorExtension."""

import numpy as np
import pytest
from django.contrib.postgres.indexes import OpClass
from django.db import NotSupportedError, connection, models
from django.db.migrations.state import ProjectState
from django.db.models.functions import Cast
from django.test.utils import CaptureQueriesContext, isolate_apps

from tests.indexing import build
from tests.testapp.models import Clip, ClipManager, ClipQuerySet
from vectorindex import (
    CosineDistance,
    HalfVectorField,
    HnswIndex,
    IvfflatIndex,
    L2Distance,
    VectorExtension,
    VectorField,
    VectorIndex,
    VectorQuerySet,
)
from vectorindex.checks import check_model_vector_indexes
from vectorindex.models import Posting


@pytest.mark.parametrize(
    ("opclass", "distance"),
    [
        ("vector_l2_ops", "l2"),
        ("vector_cosine_ops", "cosine"),
        ("vector_ip_ops", "ip"),
        ("halfvec_l2_ops", "l2"),
        ("halfvec_cosine_ops", "cosine"),
        ("halfvec_ip_ops", "ip"),
    ],
)
def test_an_operator_class_says_the_distance(opclass, distance):
    for index in (
        HnswIndex(name="e_hnsw", fields=["embedding"], opclasses=[opclass]),
        IvfflatIndex(name="e_ivf", fields=["embedding"], lists=10, opclasses=[opclass]),
        VectorIndex(name="e_vec", fields=["embedding"], opclasses=[opclass]),
        HnswIndex(OpClass("embedding", name=opclass), name="e_expr"),
    ):
        assert (index.field_name, index.distance, index.problems()) == ("embedding", distance, [])


def test_hnsw_options_build_the_head_index_and_round_trip_through_a_migration():
    index = HnswIndex(name="e_hnsw", fields=["embedding"], m=24, ef_construction=64, opclasses=["vector_ip_ops"])
    assert (index.options["m"], index.options["ef_construction"]) == (24, 64)
    path, args, kwargs = index.deconstruct()
    assert (path, args) == ("vectorindex.HnswIndex", ())
    assert kwargs == {
        "name": "e_hnsw", "fields": ["embedding"], "opclasses": ["vector_ip_ops"], "m": 24, "ef_construction": 64
    }
    assert HnswIndex(**kwargs) == index and index.clone() == index
    # None, pgvector's "not given", is the default here too.
    assert HnswIndex(name="e", fields=["embedding"], m=None, ef_construction=None).tuning == {}


def test_the_half_precision_expression_pgvector_declares():
    index = HnswIndex(
        OpClass(Cast("embedding", VectorField(dimensions=3)), name="halfvec_l2_ops"),
        name="hnsw_half_precision_idx",
        m=16,
        ef_construction=64,
    )
    assert (index.fields, index.distance, index.opclass) == (["embedding"], "l2", "halfvec_l2_ops")
    path, args, kwargs = index.deconstruct()
    assert len(args) == 1 and isinstance(args[0], OpClass)
    assert kwargs == {"name": "hnsw_half_precision_idx", "ef_construction": 64}
    assert index.clone() == index


def test_ivfflat_keeps_lists_in_migrations():
    index = IvfflatIndex(name="e_ivf", fields=["embedding"], lists=100, opclasses=["vector_l2_ops"])
    path, args, kwargs = index.deconstruct()
    assert (path, kwargs["lists"]) == ("vectorindex.IvfflatIndex", 100)
    assert index.clone() == index and index.clone().lists == 100
    assert index != IvfflatIndex(name="e_ivf", fields=["embedding"], lists=50, opclasses=["vector_l2_ops"])


def test_declarations_that_cannot_mean_anything_are_refused_when_made():
    with pytest.raises(ValueError, match="disagrees with its operator class 'vector_ip_ops'"):
        HnswIndex(name="e", fields=["embedding"], distance="cosine", opclasses=["vector_ip_ops"])
    with pytest.raises(ValueError, match="opclasses cannot be used with an expression"):
        HnswIndex("embedding", name="e", opclasses=["vector_l2_ops"])
    with pytest.raises(ValueError, match="fields= or an expression, not both"):
        HnswIndex("embedding", name="e", fields=["embedding"])
    with pytest.raises(ValueError, match="same number of elements"):
        HnswIndex(name="e", fields=["embedding"], opclasses=["vector_l2_ops", "vector_ip_ops"])
    with pytest.raises(ValueError, match="indexes one vector field"):
        HnswIndex(OpClass(models.F("a") + models.F("b"), name="vector_l2_ops"), name="e")
    with pytest.raises(TypeError, match="unknown option.*lists"):
        HnswIndex(name="e", fields=["embedding"], lists=10)


@isolate_apps("tests.testapp")
def test_the_checks_say_which_operator_classes_and_options_are_not_served():
    class Track(models.Model):
        embedding = VectorField(dimensions=4)

        class Meta:
            app_label = "testapp"
            indexes = [
                HnswIndex(name="track_l1", fields=["embedding"], opclasses=["vector_l1_ops"]),
                HnswIndex(name="track_bad", fields=["embedding"], opclasses=["vector_manhattan_ops"]),
                IvfflatIndex(name="track_ivf", fields=["embedding"], lists=100, opclasses=["vector_l2_ops"]),
            ]

    messages = {(m.id, m.msg) for m in check_model_vector_indexes(Track)}
    assert messages == {
        (
            "vectorindex.E101",
            "testapp.Track: HnswIndex 'track_l1': the operator class 'vector_l1_ops' orders by L1Distance, "
            "which this index does not serve (it serves vector_l2_ops, vector_ip_ops, vector_cosine_ops, "
            "halfvec_l2_ops, halfvec_ip_ops, halfvec_cosine_ops); remove the index: L1Distance queries are "
            "answered by the exact scan.",
        ),
        (
            "vectorindex.E101",
            "testapp.Track: HnswIndex 'track_bad': the operator class 'vector_manhattan_ops' is not one this "
            "index knows; it serves vector_l2_ops, vector_ip_ops, vector_cosine_ops, halfvec_l2_ops, "
            "halfvec_ip_ops, halfvec_cosine_ops.",
        ),
        (
            "vectorindex.W007",
            "testapp.Track: IvfflatIndex 'track_ivf': lists=100 is not used; this index sizes its posting "
            "lists from its rows as they come and go.",
        ),
    }


@pytest.mark.django_db(transaction=True)  # a schema editor runs outside a test transaction
def test_vector_extension_does_nothing_either_way():
    operation = VectorExtension()
    assert operation.deconstruct() == ("vectorindex.VectorExtension", [], {})
    assert "nothing to do" in operation.describe()
    state = ProjectState()
    operation.state_forwards("testapp", state)
    with connection.schema_editor(collect_sql=True) as editor:
        operation.database_forwards("testapp", editor, state, state)
        operation.database_backwards("testapp", editor, state, state)
    assert editor.collected_sql == []


@pytest.mark.django_db
def test_an_hnsw_index_with_an_operator_class_answers_its_distance():
    """Clip's migration starts with VectorExtension(), as pgvector's do; its HnswIndex serves cosine."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    clips = Clip.objects.bulk_create(Clip(seconds=i, embedding=v) for i, v in enumerate(vectors))
    build("clip_hnsw")
    query = vectors[7] + 0.01
    with CaptureQueriesContext(connection) as queries:
        found = [c.pk for c in Clip.objects.order_by(CosineDistance("embedding", query))[:5]]
    assert any(Posting._meta.db_table in q["sql"] for q in queries)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:5]
    assert found[0] == clips[7].pk
    assert len(set(found) & {clips[i].pk for i in exact}) >= 4
    # The project's own queryset methods, with a distance, through its own manager, from the index.
    with CaptureQueriesContext(connection) as queries:
        short = list(Clip.objects.short().order_by(CosineDistance("embedding", query))[:3])
    assert any(Posting._meta.db_table in q["sql"] for q in queries)
    assert short and all(c.seconds < 60 for c in short)


# Managers: any manager's querysets understand distances --------------------------------


def test_the_projects_manager_and_queryset_classes_stay_what_they_were():
    queryset = Clip.objects.all()
    assert isinstance(Clip.objects, ClipManager) and isinstance(queryset, ClipQuerySet)
    assert isinstance(queryset, VectorQuerySet)
    assert type(Clip.objects).__name__ == "ClipManager" and type(queryset).__name__ == "ClipQuerySet"
    assert callable(Clip.objects.short) and callable(Clip.objects.approximate)
    # What a migration writes for it (use_in_migrations) is the project's class.
    assert Clip.objects.deconstruct() == (False, "tests.testapp.models.ClipManager", None, (), {})


@isolate_apps("tests.testapp")
def test_managers_declared_any_way_are_given_distances():
    class Published(models.Manager):
        def get_queryset(self):
            return super().get_queryset().filter(seconds__gt=0)

    class TalkQuerySet(models.QuerySet):
        def long(self):
            return self.filter(seconds__gte=3600)

    class Recorded(models.Model):
        seconds = models.IntegerField(default=0)
        embedding = VectorField(dimensions=2)
        objects = TalkQuerySet.as_manager()
        published = Published()

        class Meta:
            abstract = True
            app_label = "testapp"

    class Talk(Recorded):
        class Meta:
            app_label = "testapp"

    class Unrelated(models.Model):
        objects = TalkQuerySet.as_manager()

        class Meta:
            app_label = "testapp"

    for manager in (Talk.objects, Talk.published, Talk._default_manager):
        assert isinstance(manager.all(), VectorQuerySet)
    assert isinstance(Talk.objects.long(), TalkQuerySet)
    assert Talk.objects.deconstruct()[:3] == (True, None, "tests.test_from_pgvector.TalkQuerySet")
    # Django copies the managers again after the registry's caches are cleared.
    Talk._meta._expire_cache()
    assert isinstance(Talk.objects.all(), VectorQuerySet) and isinstance(Talk.published.all(), VectorQuerySet)
    # A model with no vector field sharing the queryset class keeps Django's.
    assert not isinstance(Unrelated.objects.all(), VectorQuerySet)


@isolate_apps("tests.testapp")
def test_related_managers_are_given_distances_too():
    class Playlist(models.Model):
        class Meta:
            app_label = "testapp"

    class Song(models.Model):
        playlist = models.ForeignKey(Playlist, on_delete=models.CASCADE)
        lists = models.ManyToManyField(Playlist, related_name="listed")
        embedding = VectorField(dimensions=2)

        class Meta:
            app_label = "testapp"

    playlist = Playlist(pk=1)
    assert isinstance(playlist.song_set.order_by(L2Distance("embedding", [0, 0])), VectorQuerySet)
    assert isinstance(playlist.listed.all(), VectorQuerySet)


@isolate_apps("tests.testapp")
def test_a_second_index_for_the_same_field_and_distance_is_pointed_out():
    class Twice(models.Model):
        embedding = VectorField(dimensions=4)

        class Meta:
            app_label = "testapp"
            indexes = [
                IvfflatIndex(name="twice_ivf", fields=["embedding"], opclasses=["vector_l2_ops"]),
                HnswIndex(name="twice_hnsw", fields=["embedding"], opclasses=["vector_l2_ops"]),
                HnswIndex(name="twice_cos", fields=["embedding"], opclasses=["vector_cosine_ops"]),
            ]

    assert [(m.id, m.msg) for m in check_model_vector_indexes(Twice)] == [
        (
            "vectorindex.W008",
            "testapp.Twice: HnswIndex 'twice_hnsw' indexes 'embedding' for the l2 distance, as IvfflatIndex "
            "'twice_ivf' does: every write keeps both, and queries read 'twice_ivf'.",
        )
    ]


# Distances inside arithmetic: 1 - CosineDistance(...), as tutorials write similarity ----------------


@pytest.mark.django_db
def test_similarity_as_one_minus_the_cosine_distance():
    from django.db.models import F

    from tests.django_app.models import Item
    from vectorindex import L2Distance

    for pk, vector in [(1, [1, 1, 1]), (2, [2, 2, 2]), (3, [1, 1, 2]), (4, [-1, 0, 0]), (5, None)]:
        Item.objects.create(id=pk, embedding=vector)
    build("ivfflat_idx")  # an index on the field: an expression over distances is still answered exactly
    similarity = 1 - CosineDistance("embedding", [1, 1, 1])
    rows = Item.objects.annotate(similarity=similarity).order_by("-similarity", "pk")
    assert [(r.pk, None if r.similarity is None else round(r.similarity, 6)) for r in rows] == [
        (5, None),  # PostgreSQL's rule: NULL sorts above every value, so first when descending
        (1, 1.0), (2, 1.0), (3, round(1 - 0.05719095841793653, 6)), (4, round(-1 / np.sqrt(3), 6)),
    ]
    assert [r.pk for r in Item.objects.alias(s=similarity).filter(s__gt=0.9).order_by("pk")] == [1, 2, 3]
    assert list(Item.objects.annotate(s=similarity).filter(embedding__isnull=False).order_by("-s", "pk").values_list(
        "pk", flat=True
    )[:2]) == [1, 2]
    # Built from an alias, two distances, and division: NULL where SQL would have none, or fail.
    both = Item.objects.alias(d=L2Distance("embedding", [0, 0, 0])).annotate(
        half=F("d") / 2, ratio=L2Distance("embedding", [1, 1, 1]) / F("d"), twice=2 * F("d") - 0
    ).get(pk=1)
    assert both.half == pytest.approx(np.sqrt(3) / 2) and both.twice == pytest.approx(2 * np.sqrt(3))
    assert both.ratio == 0.0
    zero = Item.objects.create(id=6, embedding=[0, 0, 0])
    assert Item.objects.annotate(r=L2Distance("embedding", [1, 1, 1]) / L2Distance("embedding", [0, 0, 0])).get(
        pk=zero.pk
    ).r is None
    with pytest.raises(NotSupportedError, match="only \\+, -, \\* and /, Coalesce\\(\\) and Case\\(\\)/When\\(\\)"):
        list(Item.objects.annotate(p=CosineDistance("embedding", [1, 1, 1]) ** 2))


# Case/When, Coalesce, fields beside distances; a distance between two columns of the row ----------------


def _clips():
    rows = {}
    for seconds, vector in [(30, [1, 0, 0, 0, 0, 0, 0, 0]), (90, [0, 1, 0, 0, 0, 0, 0, 0]),
                            (45, [1, 1, 0, 0, 0, 0, 0, 0]), (120, [0] * 8)]:
        rows[seconds] = Clip.objects.create(seconds=seconds, embedding=vector).pk
    return rows


@pytest.mark.django_db
def test_case_when_over_distances_and_fields():
    from django.db.models import Case, F, IntegerField, Q, Value, When

    pks = _clips()
    query = [1, 0, 0, 0, 0, 0, 0, 0]
    band = Case(
        When(Q(d__lt=0.5), then=Value(1)),  # on the distance: numpy
        When(Q(seconds__gt=100) | Q(seconds=90), then=Value(2)),  # on fields only: SQL
        When(Q(seconds__lt=60, d__lte=1.0), then=Value(3)),  # both: each side where it is computed
        default=Value(0),
        output_field=IntegerField(),
    )
    rows = Clip.objects.alias(d=L2Distance("embedding", query)).annotate(band=band).order_by("seconds")
    assert [(r.seconds, r.band) for r in rows] == [(30, 1), (45, 3), (90, 2), (120, 2)]
    assert all(isinstance(r.band, int) for r in rows)
    assert list(rows.values_list("seconds", "band")) == [(30, 1), (45, 3), (90, 2), (120, 2)]
    assert [r.pk for r in Clip.objects.alias(d=L2Distance("embedding", query), band=band).filter(band=2)
            .order_by("pk")] == [pks[90], pks[120]]
    # A distance as a branch's value, a field's as another's; ordered by the whole.
    score = Case(When(seconds__lt=60, then=CosineDistance("embedding", query)), default=F("seconds") / 100.0)
    ordered = Clip.objects.annotate(score=score).order_by("score", "pk")
    assert [(r.seconds, round(r.score, 6)) for r in ordered] == [
        (30, 0.0), (45, round(1 - 1 / np.sqrt(2), 6)), (90, 0.9), (120, 1.2)
    ]
    # Unknown is not true: a NULL distance (the zero vector's cosine) matches no branch on it.
    cosine = Case(When(Q(c__lt=2), then=Value(1)), default=Value(0))
    assert Clip.objects.alias(c=CosineDistance("embedding", query)).annotate(k=cosine).get(seconds=120).k == 0


@pytest.mark.django_db
def test_coalesce_and_fields_in_arithmetic_with_distances():
    from django.db.models import F, Value
    from django.db.models.functions import Coalesce

    _clips()
    query = [1, 0, 0, 0, 0, 0, 0, 0]
    rows = Clip.objects.annotate(
        c=Coalesce(CosineDistance("embedding", query), Value(2.0)),
        weighted=L2Distance("embedding", query) * F("seconds"),
        fallback=Coalesce(CosineDistance("embedding", query), F("seconds")),
    ).order_by("seconds")
    assert [(r.seconds, round(r.c, 6), round(r.weighted, 6), round(r.fallback, 6)) for r in rows] == [
        (30, 0.0, 0.0, 0.0),
        (45, round(1 - 1 / np.sqrt(2), 6), 45.0, round(1 - 1 / np.sqrt(2), 6)),
        (90, 1.0, round(90 * np.sqrt(2), 6), 1.0),
        (120, 2.0, 120.0, 120.0),  # the zero vector has no cosine: the next value
    ]
    ranked = Clip.objects.alias(w=L2Distance("embedding", query) * F("seconds")).filter(w__lt=100).order_by("-w")
    assert [r.seconds for r in ranked] == [45, 30]
    with pytest.raises(NotSupportedError, match="only with numbers, numeric fields and other distances"):
        list(Clip.objects.annotate(x=Coalesce(CosineDistance("embedding", query), F("embedding"))))


@pytest.mark.django_db
def test_a_distance_between_two_vector_columns_of_each_row():
    from django.core.exceptions import FieldError
    from django.db.models import F, OuterRef

    from tests.django_app.models import Item
    from vectorindex import L1Distance, MaxInnerProduct, SparseVector

    rows = {1: ([1, 1, 1], [1, 1, 2]), 2: ([2, 2, 2], [0, 0, 0]), 3: ([3, 0, 0], [3, 0, 0]), 4: ([1, 2, 3], None)}
    for pk, (vector, half) in rows.items():
        Item.objects.create(id=pk, embedding=vector, half_embedding=half, sparse_embedding=half)
    build("ivfflat_idx")  # the index does not answer it: the exact scan does
    found = Item.objects.annotate(
        l2=L2Distance("embedding", F("half_embedding")),
        ip=MaxInnerProduct("half_embedding", F("embedding")),
        cos=CosineDistance("embedding", F("half_embedding")),
        l1=L1Distance(Cast("embedding", HalfVectorField(dimensions=3)), F("half_embedding")),
    ).order_by("l2", "pk")
    assert [(r.pk, r.l2, r.ip, None if r.cos is None else round(r.cos, 6), r.l1) for r in found] == [
        (3, 0.0, -9.0, 0.0, 0.0),
        (1, 1.0, -4.0, round(1 - 4 / np.sqrt(18), 6), 1.0),
        (2, np.sqrt(12), -0.0, None, 6.0),  # the zero vector has no direction
        (4, None, None, None, None),  # NULL where either vector is
    ]
    assert [r.pk for r in Item.objects.alias(d=L2Distance("embedding", F("half_embedding"))).filter(d__lt=2)
            .order_by("pk")] == [1, 3]
    with pytest.raises(FieldError, match="are not vectors of one kind and length"):
        list(Item.objects.annotate(d=L2Distance("embedding", F("binary_embedding"))))
    with pytest.raises(NotSupportedError, match="a distance between two sparse vector columns"):
        list(Item.objects.annotate(d=L2Distance("sparse_embedding", F("sparse_embedding"))))
    assert Item.objects.filter(pk=1).annotate(d=L2Distance("sparse_embedding", SparseVector([1, 1, 2]))).get().d == 0
    with pytest.raises(NotSupportedError, match=r"OuterRef\('embedding'\)\) is a distance to the outer row: use it "
                       r"inside Subquery\(...\) or Exists\(...\)"):
        list(Item.objects.annotate(d=L2Distance("embedding", OuterRef("embedding"))))


# A distance to the outer row in a subquery: Subquery(...) and Exists(...) with OuterRef --------------------


@pytest.mark.django_db
def test_subqueries_with_a_distance_to_the_outer_row():
    from django.db.models import Exists, OuterRef, Q, Subquery

    from tests.django_app.models import Item

    for pk, vector in [(1, [1, 1, 1]), (2, [2, 2, 2]), (3, [1, 1, 2]), (4, [-1, 0, 0]), (5, None)]:
        Item.objects.create(id=pk, embedding=vector)
    build("ivfflat_idx")  # the inner queries are answered by the index, one per outer row
    others = Item.objects.exclude(pk=OuterRef("pk")).filter(embedding__isnull=False)
    nearest = others.order_by(L2Distance("embedding", OuterRef("embedding"))).values("pk")[:1]
    rows = Item.objects.filter(embedding__isnull=False).annotate(nearest=Subquery(nearest)).order_by("pk")
    with CaptureQueriesContext(connection) as queries:
        assert [(r.pk, r.nearest) for r in rows] == [(1, 3), (2, 3), (3, 1), (4, 1)]
    assert sum(Posting._meta.db_table in query["sql"] for query in queries.captured_queries) >= 4
    # The nearest distance itself, and conditions on it (ANDed with the rest, sliced after them).
    gap = others.annotate(d=L2Distance("embedding", OuterRef("embedding"))).order_by("d").values("d")[:1]
    with_gap = Item.objects.annotate(gap=Subquery(gap)).order_by("pk")
    assert [(r.pk, None if r.gap is None else round(r.gap, 6)) for r in with_gap] == [
        (1, 1.0), (2, round(np.sqrt(2), 6)), (3, 1.0), (4, round(np.sqrt(6), 6)), (5, None)
    ]
    assert [r.pk for r in Item.objects.alias(gap=Subquery(gap)).filter(gap__lt=1.2).order_by("pk")] == [1, 3]
    assert Item.objects.alias(gap=Subquery(gap)).filter(gap__isnull=True).get().pk == 5
    # Exists: rows with a neighbour within 1.5; NOT EXISTS also where the distance is NULL (no vector).
    close = others.alias(d=L2Distance("embedding", OuterRef("embedding"))).filter(d__lt=1.5)
    assert [r.pk for r in Item.objects.filter(Exists(close)).order_by("pk")] == [1, 2, 3]
    assert [r.pk for r in Item.objects.filter(~Exists(close)).order_by("pk")] == [4, 5]
    assert [r.pk for r in Item.objects.filter(Exists(close)).order_by("pk")[1:3]] == [2, 3]
    assert Item.objects.filter(Exists(close)).count() == 3 and Item.objects.filter(~Exists(close), pk=5).exists()
    annotated = Item.objects.annotate(has_close=Exists(close)).order_by("pk")
    assert [(r.pk, r.has_close) for r in annotated] == [(1, True), (2, True), (3, True), (4, False), (5, False)]
    # The outer query's own distances work beside it.
    outer = Item.objects.annotate(nearest=Subquery(nearest)).order_by(L2Distance("embedding", [1, 1, 1]))[:2]
    assert [(r.pk, r.nearest) for r in outer] == [(1, 3), (3, 1)]
    # What is not answered says what to write instead.
    with pytest.raises(NotSupportedError, match="cannot be ordered by a subquery with a distance"):
        list(Item.objects.annotate(nearest=Subquery(nearest)).order_by("nearest"))
    with pytest.raises(NotSupportedError, match="for model instances only: drop values"):
        list(Item.objects.annotate(nearest=Subquery(nearest)).values("pk", "nearest"))
    with pytest.raises(NotSupportedError, match="can only be ANDed with the others"):
        list(Item.objects.filter(Q(Exists(close)) | Q(pk=4)))
