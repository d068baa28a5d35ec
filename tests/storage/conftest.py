"""Fixtures of the storage tests."""

import pytest

from tests.indexing import build, clustered
from tests.testapp.models import Point


@pytest.fixture
def point_storage(db):
    """The Storage of point_embedding, built over 300 clustered rows."""
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    return runtime(get_declared("point_embedding"), "default").open()[0]
