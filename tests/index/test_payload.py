"""Payload formats: float16, int8 and int4 posting entries, re-ranked by the rows' exact vectors."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.index.test_search import exact_top
from tests.indexing import build, check, clustered, recall
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime
from vectorindex.models import IndexState, Posting

N = 3000


@pytest.fixture
def declare(monkeypatch):
    """Declare a payload format on point_embedding for this test."""

    def declare(format: str) -> None:
        monkeypatch.setitem(get_declared("point_embedding").index.tuning, "payload", format)

    return declare


def load_points() -> tuple[np.ndarray, np.ndarray]:
    vectors = clustered(N)
    created = Point.objects.bulk_create(Point(group=i % 20, embedding=v) for i, v in enumerate(vectors))
    return vectors, np.array([p.pk for p in created])


def entry_bytes() -> set[int]:
    """Bytes per entry of every posting row of point_embedding."""
    state = IndexState.objects.get(name="point_embedding")
    sizes = set()
    for row in Posting.objects.filter(index_id=state.pk):
        sizes.add(len(bytes(row.payload)) // row.count)
    return sizes


@pytest.mark.parametrize(("format", "size"), [("float16", 12 + 2 * 16), ("int8", 24 + 16), ("int4", 24 + 8)])
@pytest.mark.django_db
def test_smaller_entries_keep_recall_and_report_exact_distances(declare, format, size):
    vectors, pks = load_points()
    declare(format)
    build("point_embedding")
    state = IndexState.objects.get(name="point_embedding")
    assert state.payload["format"] == format
    assert entry_bytes() == {size}
    queries = clustered(60, seed=7)
    with CaptureQueriesContext(connection) as captured:
        found = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]
    # The candidates' own rows are read for the exact re-rank.
    table = Point._meta.db_table
    assert any(table in q["sql"] and Posting._meta.db_table not in q["sql"] for q in captured.captured_queries)
    truth = [exact_top(vectors, pks, q) for q in queries]
    assert recall(found, truth) >= 0.90
    # Many probes: every list is read, and the answer is the exact one.
    exhaustive = [
        [p.pk for p in Point.objects.approximate(probes=10_000).order_by(L2Distance("embedding", q))[:10]]
        for q in queries[:10]
    ]
    assert exhaustive == truth[:10]
    by_pk = dict(zip(pks.tolist(), vectors))
    query = queries[0]
    rows = list(Point.objects.annotate(d=L2Distance("embedding", query)).order_by("d")[:5])
    for row in rows:
        assert row.d == pytest.approx(float(np.linalg.norm(by_pk[row.pk].astype(np.float64) - query)), rel=1e-12)
    # A distance condition holds on the exact values.
    edge = rows[2].d
    kept = list(Point.objects.alias(d=L2Distance("embedding", query)).filter(d__lt=edge).order_by("d")[:5])
    assert [r.pk for r in kept] == [r.pk for r in rows[:2]]
    assert check("point_embedding").strip().endswith("point_embedding: ok")


@pytest.mark.django_db
def test_writes_and_maintenance_keep_the_built_format(declare):
    vectors, pks = load_points()
    declare("int8")
    build("point_embedding")
    declare("float32")  # the declaration changes; the stored format waits for a rebuild
    new = clustered(200, seed=21) * 10  # far outside every value the build saw
    created = Point.objects.bulk_create(Point(embedding=v) for v in new)
    call_command("vectorindex", "maintain", "point_embedding", stdout=io.StringIO())
    assert entry_bytes() == {24 + 16}
    for vector, point in zip(new[:20], created[:20]):
        nearest = Point.objects.order_by(L2Distance("embedding", vector)).first()
        assert nearest.pk == point.pk
    out = io.StringIO()
    call_command("vectorindex", "status", "point_embedding", stdout=out)
    assert "entries        int8, 40 bytes each (declared float32: takes effect at the next build)" in out.getvalue()
    out = io.StringIO()
    call_command("vectorindex", "check", "point_embedding", stdout=out, stderr=out)
    assert "stores int8 entries but declares payload='float32'" in out.getvalue()
    build("point_embedding")
    assert entry_bytes() == {12 + 4 * 16}
    report = io.StringIO()
    call_command("vectorindex", "status", "point_embedding", "--json", stdout=report)
    assert json.loads(report.getvalue())["payload"] == "float32"


@pytest.mark.django_db
def test_another_process_reads_the_format_from_the_state_row(declare):
    load_points()
    declare("float16")
    build("point_embedding")
    declared = get_declared("point_embedding")
    rt = runtime(declared, "default")
    rt.payload = None  # as a process that has not seen this build
    storage, _state = rt.open()
    assert storage.payload.format == "float16" and storage.payload.dtype.itemsize == 12 + 2 * 16
    declare("float32")
    assert runtime(declared, "default").open()[0].payload.format == "float16"


@pytest.mark.django_db
def test_an_unknown_payload_is_refused(declare):
    from vectorindex import VectorIndex

    index = VectorIndex(fields=["embedding"], name="x", payload="int2")
    assert index.problems() == [
        "VectorIndex.payload must be one of 'float32', 'float16', 'int8', 'int4', got 'int2'."
    ]


@pytest.mark.django_db
def test_a_row_gone_since_its_version_was_read_is_skipped(declare):
    """READ COMMITTED: a delete may commit between the version check and the re-rank's read."""
    vectors, pks = load_points()
    declare("int8")
    build("point_embedding")
    victim = int(pks[5])
    with connection.cursor() as cursor:  # the row goes; its version row stays live
        table = connection.ops.quote_name(Point._meta.db_table)
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [victim])
    found = [p.pk for p in Point.objects.order_by(L2Distance("embedding", vectors[5]))[:10]]
    assert victim not in found and len(found) == 10
