"""Storage: a query's reads spread over several connections at once, outside a transaction."""

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.indexing import build, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Posting, Version


def reads_of(table: str, captured) -> int:
    return sum(table in q["sql"] and q["sql"].lstrip().startswith("SELECT") for q in captured)


def posting_reads(captured) -> int:
    return reads_of(Posting._meta.db_table, captured)


def nearest(queries):
    return [
        [(p.pk, p.d) for p in Point.objects.approximate(probes=64).annotate(d=L2Distance("embedding", q)).order_by("d")[:10]]
        for q in queries
    ]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_readers_read_the_same_lists(settings):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    queries = clustered(30, seed=7)
    settings.VECTORINDEX = {"QUERY_READERS": 1}
    with CaptureQueriesContext(connection) as alone:
        one = nearest(queries)
    settings.VECTORINDEX = {"QUERY_READERS": 4}
    with CaptureQueriesContext(connection) as spread:
        many = nearest(queries)
    assert many == one
    assert posting_reads(alone.captured_queries) >= len(queries)
    versions = Version._meta.db_table
    assert reads_of(versions, alone.captured_queries) >= len(queries)
    if connection.vendor == "mysql":
        # Read on the reader threads' connections, none on this one.
        assert posting_reads(spread.captured_queries) == 0
        assert reads_of(versions, spread.captured_queries) == 0
    else:
        # SQLite: one connection reads them all, as before.
        assert posting_reads(spread.captured_queries) == posting_reads(alone.captured_queries)
        assert reads_of(versions, spread.captured_queries) == reads_of(versions, alone.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_its_own_appends_are_read(settings):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(3000))
    build("point_embedding")
    settings.VECTORINDEX = {"QUERY_READERS": 4}
    vector = (clustered(1, seed=11)[0] + np.float32(0.01)).astype(np.float32)
    with transaction.atomic():
        new = Point.objects.create(embedding=vector)
        with CaptureQueriesContext(connection) as captured:
            found = Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first()
        assert found.pk == new.pk
        assert posting_reads(captured.captured_queries) >= 1  # on the transaction's connection
    # Committed, it is found from the readers' connections too.
    assert Point.objects.approximate(probes=64).order_by(L2Distance("embedding", vector)).first().pk == new.pk
