"""The admin shows vectors compactly: editable, read-only, view-only and in lists."""

import os
import re

import numpy as np
import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from tests.testapp.models import Document, Item

VECTOR = (np.arange(8, dtype=np.float32) + 1) / 4
SUMMARY = "8 dimensions: [0.25, 0.5, 0.75, 1, 1.25, …]"


@pytest.fixture
def item(db):
    return Item.objects.create(name="thing", embedding=VECTOR)


@pytest.fixture
def superuser_client(client, db):
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    return client


def test_changelist_shows_a_preview(superuser_client, item):
    response = superuser_client.get(reverse("admin:testapp_item_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert SUMMARY in html
    assert "[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]" not in html


def test_change_page_edits_through_the_compact_widget(superuser_client, item):
    url = reverse("admin:testapp_item_change", args=[item.pk])
    html = superuser_client.get(url).content.decode()
    assert f"<summary>{SUMMARY}</summary>" in html
    assert "[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]</textarea>" in html
    response = superuser_client.post(
        url, {"name": "renamed", "group": 0, "category": "", "embedding": "[1, 1, 1, 1, 1, 1, 1, 1]"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    np.testing.assert_array_equal(Item.objects.get(pk=item.pk).embedding, np.ones(8))
    bad = superuser_client.post(url, {"name": "x", "group": 0, "category": "", "embedding": "[1, 2]"})
    assert bad.status_code == 200
    assert "expected 8 dimensions, got 2." in bad.content.decode()
    np.testing.assert_array_equal(Item.objects.get(pk=item.pk).embedding, np.ones(8))


def test_read_only_vector_field(superuser_client, db):
    document = Document.objects.create(title="d", embedding=[1, 2, 3], summary_embedding=[4, 5, 6])
    url = reverse("admin:testapp_document_change", args=[document.pk])
    response = superuser_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<summary>3 dimensions: [4, 5, 6]</summary>" in html
    assert "[4.0, 5.0, 6.0]</code>" in html
    # Saving the form leaves the read-only vector as it was.
    response = superuser_client.post(url, {"title": "d2", "embedding": "[1, 2, 3]"})
    assert response.status_code == 302
    np.testing.assert_array_equal(Document.objects.get().summary_embedding, [4, 5, 6])


def test_view_only_user_sees_previews(client, item):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_item", content_type__app_label="testapp"))
    client.force_login(user)
    response = client.get(reverse("admin:testapp_item_change", args=[item.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"<summary>{SUMMARY}</summary>" in html
    assert "<textarea" not in html


def test_add_page(superuser_client):
    response = superuser_client.get(reverse("admin:testapp_item_add"))
    assert response.status_code == 200
    assert "<summary>empty</summary>" in response.content.decode()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1" + "0" * 400 + ", 0, 0, 0, 0, 0, 0, 0]", "expected numbers within float32 range (±3.402823e+38), got 1e+400 at position 0."),
        ("[0, 0, 0, 0, 0, 0, 0, -1e400]", "expected numbers within float32 range (±3.402823e+38), got -1e+400 at position 7."),
        ("[0, 0, inf, 0, 0, 0, 0, 0]", "expected finite numbers, got inf at position 2."),
        ("[0, 0, 0, nan, 0, 0, 0, 0]", "expected finite numbers, got nan at position 3."),
    ],
)
def test_add_page_shows_a_form_error_for_numbers_a_vector_cannot_hold(superuser_client, text, error):
    response = superuser_client.post(reverse("admin:testapp_item_add"), {"name": "x", "group": 0, "category": "", "embedding": text})
    assert response.status_code == 200
    html = response.content.decode()
    assert error in html
    assert "<summary>not a valid vector</summary>" in html
    assert not Item.objects.exists()


def test_mixin_leaves_other_attributes_alone():
    model_admin = django_admin.site._registry[Item]
    with pytest.raises(AttributeError):
        model_admin.no_such_attribute
    with pytest.raises(AttributeError):
        getattr(model_admin, "vector_preview__name")


def test_index_health_page_and_actions(superuser_client):
    from tests.indexing import build, clustered
    from tests.testapp.models import Point
    from vectorindex.models import IndexState

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    response = superuser_client.get(reverse("admin:vectorindex_indexstate_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "point_embedding" in html and "ready" in html
    state = IndexState.objects.get(name="point_embedding")
    for action, expected in [("take_snapshot", "“point_embedding”: snapshot at LSN 0"), ("check_invariants", "“point_embedding”: ok")]:
        response = superuser_client.post(
            reverse("admin:vectorindex_indexstate_changelist"),
            {"action": action, "_selected_action": [state.pk], "index": 0},
            follow=True,
        )
        assert expected in response.content.decode()
    empty = IndexState.objects.get(name="passage_embedding")
    response = superuser_client.post(
        reverse("admin:vectorindex_indexstate_changelist"),
        {"action": "check_invariants", "_selected_action": [empty.pk], "index": 0},
        follow=True,
    )
    assert "passage_embedding is not built" in response.content.decode()
    page = superuser_client.get(reverse("admin:vectorindex_indexstate_change", args=[state.pk]))
    assert page.status_code == 200
    # The payload's format and sizes, not its centre's numbers.
    dimensions = Point._meta.get_field("embedding").dimensions
    assert f"int8, center: {dimensions} values" in page.content.decode()
    first_values = ", ".join(str(value) for value in state.payload["center"][:2])
    assert first_values not in page.content.decode()
    assert 'name="_save"' not in page.content.decode()  # viewed, never saved over a job's changes
    post = superuser_client.post(reverse("admin:vectorindex_indexstate_change", args=[state.pk]), {"name": "renamed"})
    assert post.status_code == 403
    assert IndexState.objects.filter(name="point_embedding").exists()


# Who may run the index actions -------------------------------------------------------

CHANGELIST = "admin:vectorindex_indexstate_changelist"


@pytest.fixture
def built_point(db):
    """The point index, built (so that a snapshot or a check of it would succeed)."""
    from tests.indexing import build, clustered
    from tests.testapp.models import Point
    from vectorindex.models import IndexState

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    return IndexState.objects.get(name="point_embedding")


@pytest.fixture
def checks_run(monkeypatch):
    """The names of the indexes whose invariants were checked (the check still runs)."""
    from vectorindex.index import recovery

    names = []
    real = recovery.check

    def check(declared, using="default"):
        names.append(declared.name)
        return real(declared, using)

    monkeypatch.setattr(recovery, "check", check)
    return names


def snapshot_ids():
    from vectorindex.models import Snapshot

    return set(Snapshot.objects.values_list("pk", flat=True))


def post_action(client, action, state):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [state.pk], "index": 0}, follow=True
    )


def staff(*codenames, name="staff"):
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="vectorindex", codename__in=codenames))
    return user


@pytest.mark.parametrize("user", [None, "member"])
def test_index_actions_refuse_anonymous_and_non_staff_users(client, built_point, checks_run, user):
    if user:
        member = User.objects.create_user(user, password="pw")
        member.user_permissions.add(*Permission.objects.filter(content_type__app_label="vectorindex"))
        client.force_login(member)
    before = snapshot_ids()
    for action in ["take_snapshot", "check_invariants"]:
        response = client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [built_point.pk], "index": 0})
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert snapshot_ids() == before
    assert checks_run == []


def test_view_only_staff_is_neither_offered_the_actions_nor_can_post_them(client, built_point, checks_run):
    client.force_login(staff("view_indexstate"))
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    assert "point_embedding" in html
    assert 'value="take_snapshot"' not in html and 'value="check_invariants"' not in html
    before = snapshot_ids()
    for action in ["take_snapshot", "check_invariants"]:
        response = post_action(client, action, built_point)
        assert response.status_code == 200
        assert 'class="messagelist"' not in response.content.decode()  # no action ran, none failed
    assert snapshot_ids() == before
    assert checks_run == []


def test_each_index_action_needs_its_own_permission(client, built_point, checks_run):
    client.force_login(staff("view_indexstate", "snapshot_indexstate"))
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="take_snapshot"' in html and 'value="check_invariants"' not in html
    before = snapshot_ids()
    assert "“point_embedding”: snapshot at LSN 0" in post_action(client, "take_snapshot", built_point).content.decode()
    assert snapshot_ids() - before
    assert "No action selected." in post_action(client, "check_invariants", built_point).content.decode()
    assert checks_run == []

    client.force_login(staff("view_indexstate", "check_indexstate", name="checker"))
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="check_invariants"' in html and 'value="take_snapshot"' not in html
    before = snapshot_ids()
    assert "“point_embedding”: ok" in post_action(client, "check_invariants", built_point).content.decode()
    assert checks_run == ["point_embedding"]
    assert "No action selected." in post_action(client, "take_snapshot", built_point).content.decode()
    assert snapshot_ids() == before


def test_superuser_has_the_index_action_permissions(superuser_client):
    html = superuser_client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="take_snapshot"' in html and 'value="check_invariants"' in html


def test_index_list_counts_heads_and_vectors_without_a_query_per_row(superuser_client, built_point):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from vectorindex.models import Head, IndexState

    def changelist():
        with CaptureQueriesContext(connection) as queries:
            html = superuser_client.get(reverse(CHANGELIST)).content.decode()
        return html, len(queries)

    alive = Head.objects.filter(index=built_point, alive=True).count()
    html, queries = changelist()
    assert f'<td class="field-heads">{alive}</td><td class="field-vectors">300</td>' in html
    rows = IndexState.objects.count()
    for number in range(3):
        IndexState.objects.create(name=f"gone_{number}", model_label="testapp.Gone", field_name="embedding", distance="l2", dimensions=2, declared=False)
    html, more_rows_queries = changelist()
    assert html.count('<td class="field-heads">0</td><td class="field-vectors">0</td>') == 3 + rows - 1
    assert more_rows_queries == queries


# Posting data against the buffer pool ------------------------------------------------


def test_an_index_page_weighs_its_posting_data_against_the_buffer_pool(superuser_client, built_point, monkeypatch):
    from django.db import connection
    from django.utils.html import escape

    from tests.indexing import pretend_buffer_pool
    from vectorindex.index.recovery import memory
    from vectorindex.index.registry import get_declared
    from vectorindex.wording import in_bytes

    posting = in_bytes(memory(get_declared("point_embedding"), "default").posting_bytes)
    html = index_page(superuser_client, "point_embedding")
    if connection.vendor == "sqlite":
        assert escape(f"{posting}; no buffer pool: the operating system caches the database's pages") in html
    assert "Warning:" not in html
    pretend_buffer_pool(monkeypatch, 1024)
    html = index_page(superuser_client, "point_embedding")
    assert f"{posting}; InnoDB buffer pool 1 KiB<br><strong>Warning: posting data {posting} is " in html
    assert (
        "× the InnoDB buffer pool (1 KiB): queries will read lists from disk; "
        "set innodb_buffer_pool_size to at least 128 MiB (see README, Deployment)</strong>"
    ) in html
    not_built = index_page(superuser_client, "passage_embedding")
    assert re.search(r'field-posting_data".*?class="readonly">([^<]*)<', not_built, re.S).group(1) == "-"


def index_page(client, name):
    from vectorindex.models import IndexState

    state = IndexState.objects.get(name=name)
    return client.get(reverse("admin:vectorindex_indexstate_change", args=[state.pk])).content.decode()


def test_the_index_list_warns_when_the_posting_table_outgrows_the_buffer_pool(superuser_client, built_point, monkeypatch):
    from django.utils.html import escape

    from tests.indexing import pretend_buffer_pool
    from vectorindex.storage.memory import MiB

    warning = (
        "The posting lists of the vector indexes on database 'default' take 286 MiB, 2.2× the InnoDB buffer pool "
        "(128 MiB): queries will read lists from disk, several times slower. Set innodb_buffer_pool_size to at least "
        "384 MiB (see README, Deployment); `manage.py vectorindex status` shows each index's posting data."
    )
    assert escape(warning) not in superuser_client.get(reverse(CHANGELIST)).content.decode()
    pretend_buffer_pool(monkeypatch, 128 * MiB, posting_table=286 * MiB)
    assert escape(warning) in superuser_client.get(reverse(CHANGELIST)).content.decode()


# A row's nearest rows: the change page's panel, the changelist's action and filter ------------------


def neighbour_rows(html):
    """(link text, distance) of each row of the change page's panel, in order."""
    panel = html[html.index("vectorindex-neighbours"):]
    panel = panel[: panel.index("</fieldset>")]
    return re.findall(r'<tr>\s*<td>\d+</td>\s*<td><a href="[^"]+">([^<]+)</a></td>\s*<td>([^<]+)</td>', panel)


def test_a_change_page_lists_the_nearest_rows_from_the_index(superuser_client, built_point):
    from tests.testapp.models import Point
    from vectorindex import L2Distance

    point = Point.objects.order_by("pk")[5]
    html = superuser_client.get(reverse("admin:testapp_point_change", args=[point.pk])).content.decode()
    assert "Nearest rows by embedding (L2Distance)" in html
    expected = list(
        Point.objects.exact().exclude(pk=point.pk).annotate(d=L2Distance("embedding", point.embedding)).order_by("d", "pk")[:10]
    )
    shown = neighbour_rows(html)
    assert len(shown) == 10
    assert len({text for text, _ in shown} & {str(p) for p in expected}) >= 9  # recall is approximate
    assert [float(d) for _, d in shown] == sorted(float(d) for _, d in shown)
    assert "Answered by the index in" in html
    assert f'href="{reverse("admin:testapp_point_changelist")}?similar_to={point.pk}"' in html


def test_without_an_index_the_exact_scan_answers_and_a_row_without_a_vector_says_so(superuser_client, db):
    near = Item.objects.create(name="near", embedding=VECTOR + 0.01)
    Item.objects.create(name="far", embedding=VECTOR + 5)
    item = Item.objects.create(name="me", embedding=VECTOR)
    html = superuser_client.get(reverse("admin:testapp_item_change", args=[item.pk])).content.decode()
    assert [text for text, _ in neighbour_rows(html)][:2] == [str(near), "far"]
    assert "Answered by the exact scan in" in html
    from tests.testapp.models import Point

    lone = Point.objects.create(embedding=None)
    html = superuser_client.get(reverse("admin:testapp_point_change", args=[lone.pk])).content.decode()
    assert "This row has no embedding: there is nothing to compare." in html


def test_the_changelist_lists_every_row_by_similarity_to_the_one_chosen(superuser_client, built_point):
    from tests.testapp.models import Point
    from vectorindex import L2Distance

    point = Point.objects.order_by("pk")[3]
    url = reverse("admin:testapp_point_changelist")
    response = superuser_client.post(url, {"action": "list_similar", "_selected_action": [point.pk]})
    assert response.status_code == 302 and response["Location"] == f"{url}?similar_to={point.pk}"
    html = superuser_client.get(response["Location"]).content.decode()
    listed = [int(pk) for pk in re.findall(r'<a href="/admin/testapp/point/(\d+)/change/[^"]*">', html)]
    exact = list(
        Point.objects.exact().annotate(d=L2Distance("embedding", point.embedding)).order_by("d", "pk").values_list("pk", flat=True)[:100]
    )
    assert listed[0] == point.pk and len(set(listed) & set(exact)) >= 90
    assert "similar to" in html and "<th" in html and "distance" in html
    # Two rows chosen: which one is meant is not known.
    two = superuser_client.post(url, {"action": "list_similar", "_selected_action": [point.pk, point.pk + 1]}, follow=True)
    assert "Select one row to list the rows most similar to it." in two.content.decode()
    # A key that is no row's: an empty list, not an error.
    assert superuser_client.get(f"{url}?similar_to=999999").status_code == 200
    assert superuser_client.get(f"{url}?similar_to=abc").status_code == 200


def test_a_view_only_user_sees_the_nearest_rows_too(client, built_point):
    from tests.testapp.models import Point

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="testapp", codename="view_point"))
    client.force_login(viewer)
    point = Point.objects.order_by("pk")[0]
    html = client.get(reverse("admin:testapp_point_change", args=[point.pk])).content.decode()
    assert len(neighbour_rows(html)) == 10


# The index's page: its health at a glance; build, maintain and recover behind permissions of their own ---------


def test_an_index_page_shows_its_health_and_draws_its_lists(superuser_client, built_point):
    from tests.testapp.models import Point
    from vectorindex.models import Head

    html = superuser_client.get(reverse("admin:vectorindex_indexstate_change", args=[built_point.pk])).content.decode()
    table = html[html.index('class="vectorindex-health"'):]
    table = table[: table.index("</table>")]
    alive = Head.objects.filter(index=built_point, alive=True).count()
    assert f"<th>vectors</th><td>{Point.objects.count():,} (0 deleted and not yet swept" in table
    assert f"<th>heads</th><td>{alive:,} alive, 0 retired</td>" in table
    for name in ("posting lists", "rows a list", "WAL", "snapshot", "head index in memory", "queries read", "entries"):
        assert f"<th>{name}</th>" in table
    assert "<th>recent head changes</th><td>none since the build</td>" in table
    assert "<th>last jobs</th><td>none yet</td>" in table
    assert "<th>stale entries</th><td>0.0 % (0 of " in table and "in every list)" in table
    for point in Point.objects.order_by("pk")[:30]:  # each change leaves its old entries stale
        point.embedding = point.embedding + 0.5
        point.save()
    html = superuser_client.get(reverse("admin:vectorindex_indexstate_change", args=[built_point.pk])).content.decode()
    stale = re.search(r"<th>stale entries</th><td>[\d.]+ % \(([\d,]+) of", html).group(1)
    assert int(stale.replace(",", "")) >= 30
    due = re.search(r"<th>maintenance due</th><td>([^<]*)</td>", table).group(1)
    assert due == "nothing: the index is in shape" or re.fullmatch(r"(\d+ \w+)(, \d+ \w+)*", due), due
    chart = html[html.index('<svg class="vectorindex-chart"'):]
    chart = chart[: chart.index("</svg>")]
    bars = re.findall(r"<title>(\d+)–(\d+) entries: (\d+) lists</title>", chart)
    assert sum(int(n) for _, _, n in bars) == alive  # every alive list, in some bar
    assert "posting_limit" in chart and "<script" not in html[html.index("vectorindex-health"):html.index("</svg>")]


@pytest.mark.parametrize(
    "action, permission, said",
    [
        ("build_indexes", "build_indexstate", "“point_embedding”: point_embedding: 300 vectors"),
        ("maintain_indexes", "maintain_indexstate", "“point_embedding”: "),
        ("recover_indexes", "recover_indexstate", "“point_embedding”: head index loaded from the snapshot"),
    ],
)
def test_build_maintain_and_recover_each_need_their_own_permission(client, built_point, action, permission, said):
    from vectorindex.models import IndexState

    client.force_login(staff("view_indexstate", name="viewer"))
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert f'value="{action}"' not in html
    generation = IndexState.objects.get(pk=built_point.pk).generation
    assert 'class="messagelist"' not in post_action(client, action, built_point).content.decode()  # nothing ran
    assert IndexState.objects.get(pk=built_point.pk).generation == generation  # nothing was rebuilt
    client.force_login(staff("view_indexstate", permission, name="doer"))
    assert f'value="{action}"' in client.get(reverse(CHANGELIST)).content.decode()
    done = post_action(client, action, built_point).content.decode()
    assert said in done, done[done.find("messagelist"):][:500]
    if action == "build_indexes":
        assert IndexState.objects.get(pk=built_point.pk).generation != generation
    # Only a POST runs an action: a GET with the same parameters lists the indexes and runs nothing.
    generation = IndexState.objects.get(pk=built_point.pk).generation
    page = client.get(reverse(CHANGELIST), {"action": action, "_selected_action": built_point.pk})
    assert page.status_code in (200, 302) and IndexState.objects.get(pk=built_point.pk).generation == generation


def test_the_index_page_says_what_maintenance_is_due_and_the_last_head_changes(superuser_client, built_point, settings):
    from django.core.management import call_command

    from tests.indexing import clustered
    from tests.testapp.models import Point
    from vectorindex.index.jobs import RUNS_KEPT
    from vectorindex.index.registry import get_declared
    from vectorindex.models import Head, JobRun

    settings.VECTORINDEX = {"JOBS": "manual"}  # the splits wait for `maintain`
    limit = get_declared("point_embedding").options["posting_limit"]
    crowd = clustered(1)[0] + np.random.default_rng(9).normal(scale=0.01, size=(3 * limit, 16)).astype(np.float32)
    Point.objects.bulk_create(Point(embedding=v) for v in crowd)  # into one list, three times its limit
    html = superuser_client.get(reverse("admin:vectorindex_indexstate_change", args=[built_point.pk])).content.decode()
    due = re.search(r"<th>maintenance due</th><td>([^<]*)</td>", html).group(1)
    assert re.search(r"\d+ split", due), due
    call_command("vectorindex", "maintain", "point_embedding", stdout=open(os.devnull, "w"))
    html = superuser_client.get(reverse("admin:vectorindex_indexstate_change", args=[built_point.pk])).content.decode()
    changes = re.search(r"<th>recent head changes</th><td>([^<]*)</td>", html).group(1)
    retired = Head.objects.filter(index=built_point, alive=False).count()
    assert retired and changes.count("head ") == min(retired, 5) and "ago" in changes, changes
    jobs = re.search(r"<th>last jobs</th><td>([^<]*)</td>", html).group(1)
    assert re.search(r"\b(split|reassign|merge|calibrate|sweep|collect|compact|defragment) [\d.]+ \w+ ago: ", jobs), jobs
    assert JobRun.objects.filter(index=built_point).count() <= RUNS_KEPT
