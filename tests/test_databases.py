"""One model, its rows in two databases (``using=``, or a router by tenant): an index on each, each on its own."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

from tests.indexing import clustered, recall
from tests.routers import current_tenant
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Head, IndexState, Posting, Snapshot, Version

pytestmark = pytest.mark.django_db(databases=["default", "other"])

INDEX = "point_embedding"


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("vectorindex", *args, stdout=out, stderr=out)
    return out.getvalue()


def nearest(queryset, query, k=10) -> list[int]:
    return list(queryset.order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


@pytest.fixture
def two(db):
    """800 rows in the default database and 1,200 others in 'other', each database's index built."""
    here = Point.objects.bulk_create(Point(group=1, embedding=v) for v in clustered(800, seed=1))
    there = Point.objects.using("other").bulk_create(Point(group=2, embedding=v) for v in clustered(1200, seed=2))
    command("build", INDEX, "--seed", "1")
    command("build", INDEX, "--seed", "1", "--database", "other")
    return here, there


def counts(alias: str) -> dict[str, int]:
    state = IndexState.objects.using(alias).get(name=INDEX)
    return {
        "heads": Head.objects.using(alias).filter(index=state, alive=True).count(),
        "versions": Version.objects.using(alias).filter(index_id=state.pk, deleted=False).count(),
        "postings": Posting.objects.using(alias).filter(index_id=state.pk).count(),
    }


def test_each_database_has_its_own_index_and_a_query_reads_only_its_own(two):
    here, there = two
    assert counts("default")["versions"] == 800 and counts("other")["versions"] == 1200
    assert counts("default")["heads"] != counts("other")["heads"]
    queries = clustered(20, seed=2)
    with CaptureQueriesContext(connections["default"]) as on_default, CaptureQueriesContext(connections["other"]) as on_other:
        found = [nearest(Point.objects.using("other"), q) for q in queries]
    assert not on_default.captured_queries
    assert any(Posting._meta.db_table in q["sql"] for q in on_other.captured_queries)
    truth = [nearest(Point.objects.using("other").exact(), q) for q in queries]
    assert recall(found, truth) >= 0.9
    theirs = {p.pk for p in there}
    assert all(set(f) <= theirs for f in found)  # the two tables' keys overlap: only 'other's rows, by group
    assert set(Point.objects.using("other").filter(pk__in=[pk for f in found for pk in f]).values_list("group", flat=True)) == {2}
    mine = [nearest(Point.objects.all(), q) for q in queries]
    assert recall(mine, [nearest(Point.objects.exact(), q) for q in queries]) >= 0.9


def test_every_command_takes_database(two):
    other = counts("other")
    assert re.search(r"vectors +1,200 ", command("status", INDEX, "--database", "other"))
    assert re.search(r"vectors +800 ", command("status", INDEX))
    assert "ok" in command("check", INDEX, "--database", "other")
    assert "snapshot at LSN" in command("snapshot", INDEX, "--database", "other")
    assert "point_embedding" in command("recover", INDEX, "--database", "other")
    assert "point_embedding" in command("maintain", INDEX, "--database", "other")
    assert "point_embedding" in command("calibrate", INDEX, "--database", "other", "--queries", "20")
    assert counts("other")["versions"] == other["versions"]
    assert counts("default")["versions"] == 800


def test_writes_to_one_database_leave_the_other_index_alone(two):
    here, there = two
    before = counts("default")
    point = Point(group=2, embedding=clustered(1, seed=5)[0])
    point.save(using="other")
    Point.objects.using("other").filter(pk=there[0].pk).delete()
    moved = Point.objects.using("other").get(pk=there[1].pk)
    moved.embedding = clustered(1, seed=6)[0]
    moved.save()
    Point.objects.using("other").filter(pk__in=[p.pk for p in there[2:40]]).update(embedding=clustered(1, seed=7)[0] + 1)
    assert counts("default") == before
    assert nearest(Point.objects.using("other"), point.embedding, 1) == [point.pk]
    assert nearest(Point.objects.using("other"), moved.embedding, 1) == [moved.pk]
    assert there[0].pk not in nearest(Point.objects.using("other"), there[0].embedding, 20)
    assert "ok" in command("check", INDEX, "--database", "other")
    assert "ok" in command("check", INDEX)


def test_a_router_by_tenant_sends_writes_and_queries_to_the_tenants_index(two):
    with override_settings(DATABASE_ROUTERS=["tests.routers.TenantRouter"]):
        token = current_tenant.set("other")
        try:
            created = Point.objects.create(group=3, embedding=clustered(1, seed=8)[0] * 3)
            assert created._state.db == "other"
            assert nearest(Point.objects.all(), created.embedding, 1) == [created.pk]
            assert Point.objects.count() == 1201
        finally:
            current_tenant.reset(token)
        assert not Point.objects.filter(group=3).exists()
    assert counts("other")["versions"] == 1201 and counts("default")["versions"] == 800


def test_jobs_carry_the_database(two, monkeypatch, settings):
    """A write to 'other' asks for its splits on 'other'; the task, run as a worker would, splits 'other's list."""
    from vectorindex import tasks
    from vectorindex.index import broker

    settings.VECTORINDEX = {"JOBS": "celery", "CALIBRATION_QUERIES": 0}
    sent = []
    monkeypatch.setattr(broker, "send", lambda job, index, using, **arguments: sent.append((job, index, using, arguments)) or True)
    crowd = clustered(1, seed=2)[0] + np.random.default_rng(3).normal(scale=0.01, size=(600, 16)).astype(np.float32)
    with CaptureQueriesContext(connections["default"]) as on_default:
        Point.objects.using("other").bulk_create(Point(group=4, embedding=v) for v in crowd)
        tasks.scan(using="other")
    assert not on_default.captured_queries
    splits = [s for s in sent if s[0] == "split"]
    assert splits and {s[2] for s in splits} == {"other"}, sent
    default_before, other_before = counts("default"), counts("other")["heads"]
    for job, index, using, arguments in splits[:1]:
        assert tasks.split.apply(kwargs={"index": index, "using": using, **arguments}).get()
    assert counts("other")["heads"] > other_before
    assert counts("default") == default_before


def test_the_admin_shows_each_databases_index(two, client):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    url = reverse("admin:vectorindex_indexstate_changelist")
    html = client.get(url).content.decode()
    assert "?database=other" in html
    row = r'>point_embedding</a></th><td class="field-database">{}</td>.*?<td class="field-vectors">(\d+)</td>'
    assert re.search(row.format("default"), html).group(1) == "800"
    listed = client.get(url, {"database": "other"}).content.decode()
    assert re.search(row.format("other"), listed).group(1) == "1200"
    state = IndexState.objects.using("other").get(name=INDEX)
    link = re.search(rf'href="([^"]*/{state.pk}/change/\?_changelist_filters=database%3Dother)"', listed)
    assert link, listed[:3000]
    page = client.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert re.search(r"<th>vectors</th><td>1,200\b", page), re.findall(r"<th>vectors</th><td>[^<]*", page)
    snapshots = {alias: set(Snapshot.objects.using(alias).values_list("pk", flat=True)) for alias in ("default", "other")}
    done = client.post(
        url + "?database=other", {"action": "take_snapshot", "_selected_action": [state.pk]}, follow=True
    ).content.decode()
    assert "“point_embedding” on database “other”: snapshot at LSN" in done
    assert set(Snapshot.objects.using("other").values_list("pk", flat=True)) - snapshots["other"]
    assert set(Snapshot.objects.using("default").values_list("pk", flat=True)) == snapshots["default"]
