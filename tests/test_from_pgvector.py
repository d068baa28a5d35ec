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
    with pytest.raises(NotSupportedError, match="only \\+, -, \\* and / with numbers"):
        list(Item.objects.annotate(p=CosineDistance("embedding", [1, 1, 1]) ** 2))
