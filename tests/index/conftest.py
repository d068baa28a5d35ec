"""Fixtures of the index tests."""

import pytest

from tests.index.streamed import INDEX
from tests.indexing import build, clustered
from tests.testapp.models import Streamed


@pytest.fixture
def small(db):
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
