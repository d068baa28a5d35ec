"""``migrate`` builds the indexes it leaves not built, as a database builds an index it creates (BUILD_ON_MIGRATE)."""

import io

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, check, clustered, recall
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.conf import vectorindex_settings
from vectorindex.index import maintenance
from vectorindex.index.registry import get_declared
from vectorindex.models import Head, IndexState, Posting

ON = {"CALIBRATION_QUERIES": 0, "BUILD_ON_MIGRATE": True}


def migrate(verbosity: int = 1) -> str:
    out = io.StringIO()
    call_command("migrate", verbosity=verbosity, stdout=out, stderr=out)
    return out.getvalue()


def status(name: str) -> str:
    return IndexState.objects.get(name=name).status


def uses_index(queries) -> bool:
    return any(Posting._meta.db_table in q["sql"] for q in queries)


@pytest.mark.django_db(transaction=True)  # migrate runs outside a test transaction
def test_migrate_builds_an_index_on_the_rows_its_table_holds(settings):
    vectors = clustered(600, seed=5)
    Point.objects.bulk_create(Point(embedding=v) for v in vectors)
    assert status("point_embedding") == "empty"  # the suite's migrate did not build it (tests/conftest.py)

    settings.VECTORINDEX = ON
    text = migrate()
    assert "Building point_embedding (testapp.Point.embedding):\n  point_embedding: 600 vectors, " in text
    assert "Building passage_embedding (testapp.Passage.embedding):\n  passage_embedding: 0 vectors, 1 head" in text
    assert status("point_embedding") == "ready"
    assert "point_embedding: ok" in check("point_embedding")
    with CaptureQueriesContext(connection) as queries:
        found = [p.pk for p in Point.objects.order_by(L2Distance("embedding", vectors[3]))[:10]]
    assert uses_index(queries) and found[0] == Point.objects.order_by("pk")[3].pk

    # Built now: the next migrate builds nothing again.
    assert "Building" not in migrate()


@pytest.mark.django_db(transaction=True)
def test_migrate_builds_quietly_at_verbosity_0_and_not_at_all_when_turned_off(settings):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(50, seed=6))
    settings.VECTORINDEX = {**ON, "BUILD_ON_MIGRATE": False}
    assert "Building" not in migrate()
    assert status("point_embedding") == "empty"
    settings.VECTORINDEX = ON
    assert migrate(verbosity=0) == ""
    assert status("point_embedding") == "ready"


def test_the_setting_is_true_or_false(settings):
    settings.VECTORINDEX = {"BUILD_ON_MIGRATE": "yes"}
    with pytest.raises(ImproperlyConfigured, match=r"VECTORINDEX\['BUILD_ON_MIGRATE'\] must be True or False, got 'yes'"):
        vectorindex_settings.BUILD_ON_MIGRATE


@pytest.mark.django_db
def test_an_index_built_on_an_empty_table_takes_writes_at_once():
    """A table just created has no rows to choose heads from: its index starts with one head, and every write goes there."""
    build("point_embedding")
    assert Head.objects.filter(index__name="point_embedding").count() == 1
    one = Point.objects.create(embedding=np.ones(16, np.float32))
    more = Point.objects.bulk_create([Point(embedding=np.full(16, i, np.float32)) for i in (2, 3, 9)])
    with CaptureQueriesContext(connection) as queries:
        found = list(Point.objects.order_by(L2Distance("embedding", np.full(16, 2.5)))[:3])
    assert uses_index(queries)
    assert found == [more[0], more[1], one]
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db
def test_an_index_built_empty_grows_by_splits_to_the_recall_of_a_build(settings):
    """Rows written after an empty build land in its one list; maintenance splits it until every list is within the limit."""
    settings.VECTORINDEX = {"JOBS": "manual", "CALIBRATION_QUERIES": 0}
    vectors = clustered(3000, seed=7)
    rows, queries = vectors[:2900], vectors[2900:]
    build("point_embedding")
    for start in range(0, len(rows), 500):  # as an application writes them, in several commits
        Point.objects.bulk_create(Point(embedding=v) for v in rows[start : start + 500])
    done = maintenance.maintain(get_declared("point_embedding"))
    assert done.finished and "split" in [outcome.job for outcome in done.outcomes]
    heads = Head.objects.filter(index__name="point_embedding", retired_lsn__isnull=True).count()
    assert heads > 10, heads
    assert "point_embedding: ok" in check("point_embedding")

    def top(q, exact=False):
        queryset = Point.objects.order_by(L2Distance("embedding", q))
        return [p.pk for p in (queryset.exact() if exact else queryset.approximate(probes=2))[:10]]

    truth = [top(q, exact=True) for q in queries]
    grown = recall([top(q) for q in queries], truth)
    build("point_embedding")
    fresh = recall([top(q) for q in queries], truth)
    assert grown >= fresh - 0.05 and grown >= 0.85, (grown, fresh)


@pytest.mark.django_db
def test_an_index_too_small_to_calibrate_reads_every_list_as_it_grows(settings):
    """Calibrated with nothing to sample, a query reads every list, however many splits made since."""
    from vectorindex.index.maintenance.splitting import split

    settings.VECTORINDEX = {"JOBS": "manual", "CALIBRATION_QUERIES": 200}
    build("point_embedding")  # empty: one head, "every list"
    vectors = clustered(1200, seed=8)
    Point.objects.bulk_create(Point(embedding=v) for v in vectors)
    [seed] = Head.objects.filter(index__name="point_embedding").values_list("pk", flat=True)
    split(get_declared("point_embedding"), seed)
    assert Head.objects.filter(index__name="point_embedding", retired_lsn__isnull=True).count() >= 6
    queries = vectors[::60] + 0.01
    truth = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q)).exact()[:10]] for q in queries]
    found = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]
    assert recall(found, truth) >= 0.99
