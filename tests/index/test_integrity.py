"""Rows changed outside Django, and rows no query reaches: ``check`` finds them, ``repair`` mends them."""

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from tests.indexing import build, check, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.engine import codec
from vectorindex.index.recovery import check as check_invariants
from vectorindex.index.recovery import surveyed
from vectorindex.index.registry import get_declared
from vectorindex.index.repair import repair
from vectorindex.index.runtime import runtime
from vectorindex.models import Version

INDEX = "point_embedding"
EVERY_LIST = {"probes": 10_000, "epsilon": 1e9}


def declared():
    return get_declared(INDEX)


def first(vector, **approximate):
    queryset = Point.objects.approximate(**approximate) if approximate else Point.objects.all()
    return queryset.order_by(L2Distance("embedding", vector)).values_list("pk", flat=True)[:1][0]


def raw(sql, params):
    table = connection.ops.quote_name(Point._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=table), params)


@pytest.fixture
def built(db):
    Point.objects.bulk_create(Point(group=1, embedding=v) for v in clustered(800, seed=5))
    build(INDEX)


def test_rows_written_with_raw_sql_are_found_by_check_and_mended_by_repair(built):
    rows = list(Point.objects.order_by("pk")[:6])
    new_vector = clustered(1, seed=6)[0] + 70
    raw("INSERT INTO {table} (id, {group}, embedding) VALUES (%s, %s, %s)".replace("{group}", connection.ops.quote_name("group")),
        [50_000, 3, codec.to_bytes(new_vector)])
    moved = [row.embedding - 80 for row in rows[:3]]
    for row, vector in zip(rows[:3], moved):
        raw("UPDATE {table} SET embedding = %s WHERE id = %s", [codec.to_bytes(vector), row.pk])
    raw("DELETE FROM {table} WHERE id IN (%s, %s)", [rows[3].pk, rows[4].pk])

    found = surveyed(declared())
    assert found.missing == [50_000]
    assert found.changed == [row.pk for row in rows[:3]]
    assert found.orphaned == [rows[3].pk, rows[4].pk]
    assert found.lost == [] and found.unreachable == []
    violations, _warnings = check_invariants(declared())
    assert any("1 row has a vector but no live version row (e.g. [50000])" in v for v in violations), violations
    assert any("3 rows hold another vector than their index entry" in v for v in violations)
    assert any("2 live version rows belong to no row with a vector" in v for v in violations)

    report = repair(declared())
    assert report.found == {"missing": 1, "lost": 0, "changed": 3, "unreachable": 0, "orphaned": 2}
    assert (report.indexed, report.orphans_deleted) == (4, 2)
    assert "point_embedding: ok" in check(INDEX)
    assert first(new_vector) == 50_000
    for row, vector in zip(rows[:3], moved):
        assert first(vector) == row.pk
        assert first(row.embedding, **EVERY_LIST) != row.pk  # the old vector's entries are stale
    assert Version.objects.get(vector_id=rows[3].pk).deleted
    assert repair(declared()).found == dict.fromkeys(report.found, 0)  # nothing left to mend


def test_a_chunk_of_rows_none_of_which_is_indexed_is_reported(built, settings):
    """Rows are surveyed a chunk at a time; a chunk with no indexed row at all is no special case."""
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZE": 4}
    group = connection.ops.quote_name("group")
    start = Point.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1_000
    for pk, vector in enumerate(clustered(8, seed=8) + 70, start=start):
        raw(f"INSERT INTO {{table}} (id, {group}, embedding) VALUES (%s, %s, %s)", [pk, 3, codec.to_bytes(vector)])
    assert surveyed(declared()).missing == list(range(start, start + 8))
    assert repair(declared()).indexed == 8
    assert "point_embedding: ok" in check(INDEX)


def test_a_row_only_in_a_list_no_query_for_it_reads_is_unreachable_until_repaired(built, monkeypatch):
    monkeypatch.setitem(declared().index.tuning, "probes", 8)  # fewer than the 32 heads: not every list
    rt = runtime(declared(), "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    point = Point.objects.order_by("pk").first()
    # Its current version only in the list of the head farthest from it.
    ids = head.ids()
    far = int(ids[np.argmax(np.linalg.norm(head.vectors(ids) - point.embedding, axis=1))])
    version = storage.next_versions([point.pk])
    ((count, data),) = storage.payload.pack(np.array([point.pk]), version, point.embedding[None, :])
    storage.append([(far, count, data)])

    assert first(point.embedding) != point.pk
    assert first(point.embedding, **EVERY_LIST) == point.pk  # not lost: every list read finds it
    assert surveyed(declared()).unreachable == [point.pk]
    violations, _warnings = check_invariants(declared())
    assert any("1 row is only in posting lists that a query for its own vector does not read" in v for v in violations)
    assert repair(declared()).indexed == 1
    assert first(point.embedding) == point.pk
    assert "point_embedding: ok" in check(INDEX)


def test_a_row_whose_entries_are_gone_is_lost_until_repaired(built):
    point = Point.objects.order_by("pk").first()
    storage, _state = runtime(declared(), "default").open()
    storage.bump_versions([point.pk])  # every entry of it is now stale
    assert surveyed(declared()).lost == [point.pk]
    assert first(point.embedding, **EVERY_LIST) != point.pk
    repair(declared())
    assert first(point.embedding) == point.pk
    assert "point_embedding: ok" in check(INDEX)


def test_the_repair_command(built):
    point = Point.objects.order_by("pk").first()
    raw("UPDATE {table} SET embedding = %s WHERE id = %s", [codec.to_bytes(point.embedding + 90), point.pk])
    out = io.StringIO()
    call_command("vectorindex", "repair", INDEX, stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "point_embedding: 1 row indexed again (0 missing, 0 lost, 1 changed, 0 unreachable), 0 orphaned version rows marked deleted"
    )
    out = io.StringIO()
    call_command("vectorindex", "repair", INDEX, stdout=out)
    assert out.getvalue().splitlines()[-1] == "point_embedding: nothing to repair"


def test_repair_makes_a_row_reachable_even_where_routing_misses_its_head(built, monkeypatch):
    """Routing's graph search can miss a head (one equal to the vector, in a worn graph): a repair checks with a query's own probe."""
    from vectorindex.engine import routing

    monkeypatch.setitem(declared().index.tuning, "probes", 8)
    point = Point.objects.order_by("pk").first()
    storage, _state = runtime(declared(), "default").open()
    storage.bump_versions([point.pk])  # lost: every entry stale

    def farthest(head, vectors, **kwargs):
        ids = head.ids()
        far = ids[np.argmax(np.linalg.norm(head.vectors(ids)[None, :, :] - vectors[:, None, :], axis=2), axis=1)]
        return np.arange(len(vectors)), far

    assign = routing.assign
    routing.assign = farthest
    try:
        assert repair(declared()).found["lost"] == 1
    finally:
        routing.assign = assign
    found = surveyed(declared())
    assert (found.lost, found.unreachable) == ([], [])
    assert first(point.embedding) == point.pk

