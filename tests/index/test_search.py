"""VectorIndex: declaration, build, and answering queries from the index."""

import numpy as np
import pytest
from django.core import checks
from django.db import connection, models
from django.test.utils import CaptureQueriesContext, isolate_apps

from tests.indexing import DATASET, build, check, clustered, recall
from tests.testapp.models import Passage, Point
from vectorindex import CosineDistance, L2Distance, VectorField, VectorIndex
from vectorindex.models import IndexState, Posting, Version

N = 4000


@pytest.fixture
def points(db):
    vectors = clustered(N)
    created = Point.objects.bulk_create(Point(group=i % 20, embedding=v) for i, v in enumerate(vectors))
    build("point_embedding")
    return vectors, np.array([p.pk for p in created])


def exact_top(vectors, pks, query, k=10, mask=None):
    distances = np.linalg.norm(vectors.astype(np.float64) - query.astype(np.float64), axis=1)
    if mask is not None:
        distances = np.where(mask, distances, np.inf)
    return pks[np.lexsort((pks, distances))[:k]].tolist()


def uses_index(queries) -> bool:
    return any(Posting._meta.db_table in q["sql"] for q in queries)


# Declaration ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # a schema editor runs outside a test transaction
def test_the_migration_leaves_the_models_table_without_another_index():
    """A B-tree on the primary key was once made: MariaDB used it for `pk IN (...)`, two reads a row."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Point._meta.db_table)
    assert "point_embedding" not in constraints
    assert not [name for name, c in constraints.items() if c["index"] and c["columns"] == ["id"] and not c["primary_key"]]
    index = Point._meta.indexes[0]
    table = Point._meta.db_table
    with connection.schema_editor(collect_sql=True) as editor:
        assert str(index.create_sql(Point, editor)) == (
            f"SELECT 1 /* VectorIndex point_embedding on {table}: kept in vectorindex's tables */"
        )
        assert str(index.remove_sql(Point, editor)) == (
            f"SELECT 1 /* VectorIndex point_embedding on {table}: removed; what it stored goes at the end "
            "of the migration, unless the migration adds it back */"
        )


def test_deconstruct_emits_only_non_defaults():
    index = VectorIndex(fields=["embedding"], name="x_embedding", distance="cosine", probes=64)
    path, args, kwargs = index.deconstruct()
    assert path == "vectorindex.VectorIndex"
    assert kwargs == {"fields": ["embedding"], "name": "x_embedding", "distance": "cosine", "probes": 64}
    assert index == VectorIndex(**kwargs)


def test_options_are_checked_again_whenever_they_change():
    from django.core.exceptions import ImproperlyConfigured

    from vectorindex.index.registry import get_declared

    declared = get_declared("point_embedding")
    assert declared.options["posting_limit"] == 200
    declared.index.tuning.update(posting_limit=16, merge_below=8)  # lists that split and merge for ever (E101)
    try:
        with pytest.raises(ImproperlyConfigured, match="posting_limit"):
            declared.options
    finally:
        del declared.index.tuning["posting_limit"], declared.index.tuning["merge_below"]
    assert declared.options["posting_limit"] == 200
    declared.options["probes"] = 3  # a copy: the declaration's options stay as declared
    assert declared.options["probes"] is None


def test_unknown_option_is_refused_at_once():
    with pytest.raises(TypeError, match="VectorIndex got unknown option\\(s\\) probs"):
        VectorIndex(fields=["embedding"], name="x", probs=3)


@isolate_apps("tests.testapp")
def test_system_checks_catch_bad_declarations():
    class Bad(models.Model):
        title = models.CharField(max_length=10)
        embedding = VectorField(dimensions=4)

        class Meta:
            app_label = "testapp"
            indexes = [
                VectorIndex(fields=["title"], name="bad_title", distance="manhattan", replicas=0, head_fraction=0),
            ]

    from vectorindex.checks import check_model_vector_indexes

    messages = check_model_vector_indexes(Bad)
    texts = [m.msg for m in messages]
    ids = {m.id for m in messages}
    assert ids == {"vectorindex.E101", "vectorindex.E102"}
    assert "testapp.Bad: VectorIndex 'bad_title': VectorIndex.distance must be one of 'l2', 'cosine', 'ip', got 'manhattan'." in texts
    assert "testapp.Bad: VectorIndex 'bad_title': VectorIndex.replicas must be an integer from 1 to 8, got 0." in texts
    assert "testapp.Bad: VectorIndex 'bad_title': VectorIndex.head_fraction must be a number greater than 0 and at most 1.0, got 0." in texts
    assert "testapp.Bad: VectorIndex 'bad_title' is on 'title', which is a CharField, not a VectorField or HalfVectorField." in texts


@pytest.mark.django_db(databases=["default", "other"])  # Django 6 asks every database during model checks
def test_declared_indexes_pass_the_checks():
    messages = checks.run_checks(tags=[checks.Tags.models])
    assert not [m for m in messages if m.id.startswith("vectorindex.E")]


@pytest.mark.django_db
def test_migrate_registers_the_index():
    state = IndexState.objects.get(name="point_embedding")
    assert (state.model_label, state.field_name, state.distance, state.dimensions) == ("testapp.Point", "embedding", "l2", 16)
    assert state.status == "empty"
    assert state.options["replicas"] == 3


# Queries ----------------------------------------------------------------------------


def test_recall_on_clustered_data_at_default_settings(points):
    vectors, pks = points
    queries = clustered(100, seed=7)
    with CaptureQueriesContext(connection) as captured:
        found = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]
    assert uses_index(captured.captured_queries)
    truth = [exact_top(vectors, pks, q) for q in queries]
    assert recall(found, truth) >= 0.90
    # The exact path through the same queryset is exact.
    exact = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q)).exact()[:10]] for q in queries[:10]]
    assert exact == truth[:10]


def test_a_query_for_a_stored_vector_that_is_a_head_reads_its_neighbours_lists_too(points):
    """"More like this row": a row's own vector as the query, where that vector was chosen as a head.

    At distance 0 from that head, a cut-off scaled by the nearest head kept
    that one list and no other, whatever the probes.
    """
    from vectorindex.models import Head

    vectors, pks = points
    heads = list(Head.objects.filter(alive=True).values_list("vector", flat=True)[:40])
    queries = [np.frombuffer(bytes(vector), dtype="<f4") for vector in heads]
    found = [[p.pk for p in Point.objects.approximate(probes=16).order_by(L2Distance("embedding", q))[:10]] for q in queries]
    truth = [exact_top(vectors, pks, q) for q in queries]
    assert recall(found, truth) >= 0.95


def test_distances_from_the_index_are_exact_values(points):
    vectors, pks = points
    query = clustered(1, seed=9)[0]
    rows = list(Point.objects.annotate(d=L2Distance("embedding", query)).order_by("d")[:5])
    by_pk = dict(zip(pks.tolist(), vectors))
    for row in rows:
        assert row.d == pytest.approx(float(np.linalg.norm(by_pk[row.pk].astype(np.float64) - query)), rel=1e-12)
    assert [r.d for r in rows] == sorted(r.d for r in rows)


def test_more_probes_do_not_lower_recall(points):
    vectors, pks = points
    queries = clustered(40, seed=11)
    truth = [exact_top(vectors, pks, q) for q in queries]

    def at(probes):
        qs = Point.objects.approximate(probes=probes)
        return recall([[p.pk for p in qs.order_by(L2Distance("embedding", q))[:10]] for q in queries], truth)

    low, high = at(1), at(200)
    assert high >= low and high >= 0.99
    with pytest.raises(ValueError, match="approximate\\(probes=...\\) must be a positive integer, got 0"):
        Point.objects.approximate(probes=0)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("probes", 0), ("probes", -1), ("probes", True), ("probes", 1.5), ("probes", "3"),
        ("epsilon", float("nan")), ("epsilon", -1), ("epsilon", -float("inf")), ("epsilon", True), ("epsilon", "1"),
    ],
)
def test_approximate_refuses_what_is_not_a_count_or_a_ratio(option, value):
    expected = "a positive integer" if option == "probes" else "a number of at least 0"
    with pytest.raises(ValueError) as caught:
        Point.objects.approximate(**{option: value})
    assert str(caught.value) == f"approximate({option}=...) must be {expected}, got {value!r}."


def test_an_infinite_epsilon_probes_as_many_heads_as_asked_with_no_cut_off(points, monkeypatch):
    from vectorindex.index import search
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    rt = runtime(get_declared("point_embedding"), "default")
    head = rt.current(*rt.open())
    # A head's own vector: the cut-off is scaled by the nearest other head.
    query = head.vectors(np.array([min(head.alive)]))[0]
    probed = []
    original = search.routing.probe

    def probe(*args):
        probed.append(original(*args))
        return probed[-1]

    monkeypatch.setattr(search.routing, "probe", probe)
    ordered = L2Distance("embedding", query)
    answers = [
        [p.pk for p in Point.objects.approximate(probes=20, epsilon=epsilon).order_by(ordered)[:10]]
        for epsilon in (None, float("inf"), 10**400, 0.0)
    ]
    # An infinite ε (or an int beyond a float) cuts none of the 20 off; ε 0
    # keeps the nearest few alone (routing.MIN_PROBED); the default, a few more.
    lengths = [len(heads) for heads in probed]
    floor = search.routing.MIN_PROBED
    assert lengths[1:3] == [20, 20] and lengths[3] == floor and floor <= lengths[0] < 20
    assert answers[1] == answers[2] and all(len(rows) == 10 for rows in answers)


def test_versions_and_the_re_ranked_rows_are_read_by_one_statement(points):
    """int8 entries (the default) are re-ranked on the rows' own vectors, read with their versions."""
    vectors, pks = points
    with CaptureQueriesContext(connection) as captured:
        found = [p.pk for p in Point.objects.order_by(L2Distance("embedding", vectors[7]))[:10]]
    assert found[0] == pks[7]
    table, versions = Point._meta.db_table, Version._meta.db_table
    lookups = [q["sql"] for q in captured.captured_queries if versions in q["sql"]]
    assert len(lookups) == 1 and table in lookups[0]
    # The model's table is read once more, for the rows of the result.
    assert len([q for q in captured.captured_queries if table in q["sql"] and versions not in q["sql"]]) == 1


def test_filtered_query_returns_k_rows(points):
    vectors, pks = points
    groups = np.arange(N) % 20  # group 3 is 5% of the rows
    queries = clustered(20, seed=3)
    found, truth = [], []
    for q in queries:
        rows = [p.pk for p in Point.objects.filter(group=3).order_by(L2Distance("embedding", q))[:10]]
        assert len(rows) == 10
        found.append(rows)
        truth.append(exact_top(vectors, pks, q, mask=groups == 3))
    assert recall(found, truth) >= 0.90
    # A filter matching fewer than k rows returns all of them.
    few = pks[:3].tolist()
    assert sorted(p.pk for p in Point.objects.filter(pk__in=few).order_by(L2Distance("embedding", queries[0]))[:10]) == sorted(few)


def test_distance_conditions_and_slices_with_the_index(points):
    vectors, pks = points
    query = clustered(1, seed=5)[0]
    truth = exact_top(vectors, pks, query, k=30)
    rows = list(Point.objects.alias(d=L2Distance("embedding", query)).filter(d__gt=0).order_by("d")[10:20])
    assert len(rows) == 10
    assert len(set(r.pk for r in rows) & set(truth[5:25])) >= 8


def test_an_empty_slice_is_empty_and_reads_nothing(points):
    """[:0] once raised "need at least one array" from the index path; an empty
    slice or none() read every posting list before the exact path said []."""
    query = clustered(1, seed=5)[0]
    ordered = Point.objects.order_by(L2Distance("embedding", query))
    for qs in [
        ordered,  # the index path
        ordered.exact(),
        ordered.approximate(probes=10**4, epsilon=0),
        ordered.filter(group=3),
        Point.objects.alias(d=L2Distance("embedding", query)).filter(d__lt=5).order_by("d"),
    ]:
        for empty in (qs[:0], qs[5:5], qs[10:3], qs[3:10][7:9], qs.none()[:10]):
            with CaptureQueriesContext(connection) as captured:
                assert list(empty) == []
                assert list(empty.iterator()) == []
                assert list(empty.values_list("pk", flat=True)) == []
                assert empty.count() == 0
                assert not empty.exists()
            assert captured.captured_queries == []
    assert len(ordered[:3]) == 3  # the same querysets, not empty, still answer


def test_queries_the_index_cannot_answer_go_exact(points):
    vectors, pks = points
    query = clustered(1, seed=5)[0]
    for qs in [
        Point.objects.order_by(L2Distance("embedding", query).desc())[:5],  # farthest first
        Point.objects.order_by(CosineDistance("embedding", query))[:5],  # no cosine index on Point
        Point.objects.order_by(L2Distance("embedding", query)),  # no slice
    ]:
        with CaptureQueriesContext(connection) as captured:
            list(qs)
        assert not uses_index(captured.captured_queries)


def test_unbuilt_index_answers_exactly(db):
    vectors = clustered(50)
    Point.objects.bulk_create(Point(embedding=v) for v in vectors)
    query = vectors[7]
    with CaptureQueriesContext(connection) as captured:
        first = Point.objects.order_by(L2Distance("embedding", query)).first()
    assert not uses_index(captured.captured_queries)
    assert np.array_equal(first.embedding, query)


@pytest.mark.skipif(not (DATASET / "base.f16.npy").exists(), reason="the pypi-minilm-384 data set is not beside the project")
@pytest.mark.django_db
def test_recall_on_real_embeddings():
    """20,000 real sentence embeddings (cosine), the data set's own held-out queries."""
    base = np.load(DATASET / "base.f16.npy", mmap_mode="r")[:20_000].astype(np.float32)
    queries = np.load(DATASET / "queries.f32.npy")[:100]
    created = []
    for start in range(0, len(base), 5_000):
        created += Passage.objects.bulk_create(
            Passage(name=str(i), embedding=base[i]) for i in range(start, start + 5_000)
        )
    pks = np.array([p.pk for p in created])
    build("passage_embedding")
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    truth = [pks[np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10]].tolist() for q in queries]
    found = [[p.pk for p in Passage.objects.order_by(CosineDistance("embedding", q))[:10]] for q in queries]
    assert recall(found, truth) >= 0.90
    assert check("passage_embedding").strip().endswith("passage_embedding: ok")


@pytest.mark.parametrize("shape", ["instances", "values_list"])
def test_rows_deleted_between_the_choice_and_the_read_are_replaced(points, monkeypatch, shape):
    """A delete that commits after the index chose the rows and before they are read: the slice still has k rows."""
    from vectorindex.index import search

    vectors, pks = points
    query = vectors[7]
    chosen_once = []
    answer = search.answer

    def answer_then_delete(queryset, plan):
        found = answer(queryset, plan)
        if not chosen_once:
            chosen_once.extend(found[0][:2])
            Point.objects.filter(pk__in=chosen_once).delete()  # as another connection's commit would
        return found

    monkeypatch.setattr(search, "answer", answer_then_delete)
    ordered = Point.objects.order_by(L2Distance("embedding", query))
    rows = list(ordered[:10]) if shape == "instances" else list(ordered.values_list("pk", flat=True)[:10])
    got = [row.pk for row in rows] if shape == "instances" else rows
    alive = np.isin(pks, chosen_once, invert=True)
    assert got == exact_top(vectors, pks, query, mask=alive)
