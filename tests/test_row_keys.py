"""Indexes over models whose primary key is not an integer: a UUID, a string.

The index gives each vector an id of its own and keeps the row's key, as
text, in the vector's version row. Everything a model with an integer key
does works the same: builds, every write, queries through the index,
check and repair, a rolled-back save.
"""

import io
import re
import uuid

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection, models, transaction
from django.test.utils import CaptureQueriesContext, isolate_apps

from tests.indexing import build, check, clustered, recall
from tests.testapp.models import Sku, Ticket
from vectorindex import L2Distance, VectorField, VectorIndex
from vectorindex.checks import check_model_vector_indexes
from vectorindex.models import Posting, Version

pytestmark = pytest.mark.django_db


def nearest(model, query, k=10, **filters):
    return [row.pk for row in model.objects.filter(**filters).order_by(L2Distance("embedding", query))[:k]]


def exact_nearest(model, query, k=10, **filters):
    return [row.pk for row in model.objects.exact().filter(**filters).order_by(L2Distance("embedding", query))[:k]]


def keyed_versions(name):
    from vectorindex.models import IndexState

    index_id = IndexState.objects.get(name=name).pk
    return Version.objects.filter(index_id=index_id)


def test_a_uuid_keyed_index_is_built_searched_and_kept_by_every_write():
    vectors = clustered(400, dimensions=16, centers=20, seed=3)
    Ticket.objects.bulk_create(Ticket(topic=f"t{i % 7}", embedding=v) for i, v in enumerate(vectors[:300]))
    assert build("ticket_embedding").startswith("ticket_embedding: 300 vectors")
    versions = keyed_versions("ticket_embedding")
    assert versions.count() == 300
    assert set(versions.values_list("row_key", flat=True)) == {str(pk) for pk in Ticket.objects.values_list("pk", flat=True)}
    queries = vectors[300:320]
    found = [nearest(Ticket, q) for q in queries]
    assert all(isinstance(pk, uuid.UUID) for pks in found for pk in pks)
    assert recall(found, [exact_nearest(Ticket, q) for q in queries]) >= 0.9
    with CaptureQueriesContext(connection) as queries_run:
        nearest(Ticket, vectors[0], topic="t1")
    assert any(Posting._meta.db_table in q["sql"] for q in queries_run.captured_queries), "the index answered"
    assert nearest(Ticket, vectors[0], k=5, topic="t1") == exact_nearest(Ticket, vectors[0], k=5, topic="t1")

    # Every write: save, bulk_create, update of a vector, NULL, delete, bulk_update, update(), delete().
    new = Ticket.objects.create(embedding=vectors[350])
    assert nearest(Ticket, vectors[350], k=1) == [new.pk]
    Ticket.objects.bulk_create([Ticket(embedding=v) for v in vectors[351:380]])
    moved = Ticket.objects.order_by("pk").first()
    moved.embedding = vectors[390]
    moved.save()
    assert nearest(Ticket, vectors[390], k=1) == [moved.pk]
    emptied = Ticket.objects.exclude(pk=moved.pk).order_by("pk").first()
    emptied.embedding = None
    emptied.save()
    assert not keyed_versions("ticket_embedding").filter(row_key=str(emptied.pk), deleted=False).exists()
    assert emptied.pk not in nearest(Ticket, vectors[0], k=400, embedding__isnull=False)
    gone = list(Ticket.objects.filter(topic="t2")[:5])
    for ticket in gone:
        ticket.delete()
    some = list(Ticket.objects.filter(topic="t3"))
    for ticket, vector in zip(some, vectors[380:]):
        ticket.embedding = vector
    Ticket.objects.bulk_update(some, ["embedding"])
    far = np.full(16, 100.0, dtype=np.float32)  # away from every cluster: its rows tie only among themselves
    updated = set(Ticket.objects.filter(topic="t4").values_list("pk", flat=True))
    Ticket.objects.filter(topic="t4").update(embedding=far)
    assert set(nearest(Ticket, far, k=len(updated))) == updated
    Ticket.objects.filter(topic="t5").delete()
    assert "ok" in check("ticket_embedding")
    for query in vectors[380:390]:
        assert recall([nearest(Ticket, query)], [exact_nearest(Ticket, query)]) >= 0.8
    assert not set(nearest(Ticket, vectors[0], k=400)) & {t.pk for t in gone}
    # The vectors of deleted rows keep their keys until the sweep forgets them.
    assert versions.filter(deleted=False).count() == Ticket.objects.filter(embedding__isnull=False).count()


def test_a_rolled_back_save_leaves_no_key_behind():
    vectors = clustered(60, dimensions=16, seed=4)
    Ticket.objects.bulk_create(Ticket(embedding=v) for v in vectors[:50])
    build("ticket_embedding")
    before = set(keyed_versions("ticket_embedding").values_list("row_key", "version", "deleted"))
    with pytest.raises(RuntimeError), transaction.atomic():
        Ticket.objects.create(embedding=vectors[55])
        Ticket.objects.order_by("pk").first().delete()
        raise RuntimeError("rolled back")
    assert set(keyed_versions("ticket_embedding").values_list("row_key", "version", "deleted")) == before
    assert "ok" in check("ticket_embedding")


def test_check_names_rows_by_their_keys_and_repair_mends_them():
    vectors = clustered(80, dimensions=16, seed=5)
    tickets = Ticket.objects.bulk_create(Ticket(embedding=v) for v in vectors)
    build("ticket_embedding")
    missing = tickets[7]
    keyed_versions("ticket_embedding").filter(row_key=str(missing.pk)).delete()  # as a restore of the index's tables alone might
    with connection.cursor() as cursor:  # a row written outside Django: no index entry
        extra = uuid.uuid4()
        cursor.execute(
            f"INSERT INTO {Ticket._meta.db_table} (id, topic, embedding) VALUES (%s, %s, %s)",
            [Ticket._meta.pk.get_db_prep_value(extra, connection), "raw",
             Ticket._meta.get_field("embedding").get_db_prep_value(vectors[0], connection)],
        )
    orphan = tickets[9]
    with connection.cursor() as cursor:  # a row deleted outside Django: its version row is left
        cursor.execute(
            f"DELETE FROM {Ticket._meta.db_table} WHERE id = %s", [Ticket._meta.pk.get_db_prep_value(orphan.pk, connection)]
        )
    out = io.StringIO()
    with pytest.raises(Exception) as caught:
        call_command("vectorindex", "check", "ticket_embedding", stdout=out, stderr=out)
    report = f"{caught.value}\n{out.getvalue()}"
    for pk in (missing.pk, extra, orphan.pk):
        assert str(pk) in report, report
    out = io.StringIO()
    call_command("vectorindex", "repair", "ticket_embedding", stdout=out)
    assert "ok" in check("ticket_embedding")
    assert nearest(Ticket, vectors[7], k=1) == [missing.pk]
    assert orphan.pk not in nearest(Ticket, vectors[9], k=80)
    assert extra in nearest(Ticket, vectors[0], k=2)


def test_a_string_keyed_index_with_float32_entries():
    vectors = clustered(200, dimensions=16, centers=10, seed=6)
    Sku.objects.bulk_create(Sku(code=f"{'AB'[i % 2]}-{i:04d}", embedding=v) for i, v in enumerate(vectors[:150]))
    build("sku_embedding")
    queries = vectors[150:170]
    assert recall([nearest(Sku, q) for q in queries], [exact_nearest(Sku, q) for q in queries]) >= 0.9
    assert nearest(Sku, vectors[0], k=5, code__startswith="B") == exact_nearest(Sku, vectors[0], k=5, code__startswith="B")
    Sku.objects.create(code="NEW", embedding=vectors[180])
    assert nearest(Sku, vectors[180], k=1) == ["NEW"]
    Sku.objects.filter(code="NEW").delete()
    Sku.objects.create(code="NEW", embedding=vectors[181])  # the same key again: a vector of the index's again
    assert nearest(Sku, vectors[181], k=1) == ["NEW"] and nearest(Sku, vectors[180], k=1) != ["NEW"]
    assert "ok" in check("sku_embedding")


@isolate_apps("tests.testapp")
def test_the_keys_an_index_cannot_keep_are_refused_by_a_check():
    class Long(models.Model):
        code = models.CharField(max_length=300, primary_key=True)
        embedding = VectorField(dimensions=2)

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["embedding"], name="long_embedding")]

    class Uuid(models.Model):
        id = models.UUIDField(primary_key=True, default=uuid.uuid4)
        embedding = VectorField(dimensions=2)

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["embedding"], name="uuid_embedding")]

    [error] = [m for m in check_model_vector_indexes(Long) if m.id == "vectorindex.E103"]
    assert re.search(r"testapp.Long's is a CharField of up to 300 characters\.$", error.msg), error.msg
    assert not [m for m in check_model_vector_indexes(Uuid) if m.id == "vectorindex.E103"]
