"""Every way Django writes a row keeps the index right, in the row's transaction."""

import json

import pytest
from django.core import serializers
from django.core.management import call_command
from django.db import connection, models
from django.db.models.signals import post_delete, post_save, pre_save

from tests.indexing import build, check, clustered
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.models import Version

EVERY_LIST = {"probes": 10_000, "epsilon": 1e9}


def found_first(vector, **approximate):
    """The pk the index returns first for *vector*."""
    queryset = Point.objects.approximate(**approximate) if approximate else Point.objects.all()
    return queryset.order_by(L2Distance("embedding", vector)).values_list("pk", flat=True)[:1][0]


@pytest.fixture
def built(db):
    Point.objects.bulk_create(Point(group=1, embedding=v) for v in clustered(600, seed=3))
    build("point_embedding")


def fixture_file(tmp_path, rows):
    path = tmp_path / "points.json"
    path.write_text(json.dumps([
        {"model": "testapp.point", "pk": pk, "fields": {"group": 7, "embedding": str([float(x) for x in vector])}}
        for pk, vector in rows
    ]))
    return str(path)


def test_loaddata_indexes_new_rows(built, tmp_path):
    top = Point.objects.order_by("-pk").values_list("pk", flat=True)[0]
    vectors = clustered(20, seed=11) + 50  # far from everything else
    rows = [(top + 1 + i, v) for i, v in enumerate(vectors)]
    call_command("loaddata", fixture_file(tmp_path, rows), verbosity=0)
    for pk, vector in rows:
        assert Version.objects.get(vector_id=pk).version == 1
        assert found_first(vector) == pk
    assert "point_embedding: ok" in check("point_embedding")


def test_loaddata_over_existing_rows_moves_their_vectors(built, tmp_path):
    old = list(Point.objects.order_by("pk")[:10])
    moved = clustered(10, seed=12) - 60
    call_command("loaddata", fixture_file(tmp_path, [(p.pk, v) for p, v in zip(old, moved)]), verbosity=0)
    for point, vector in zip(old, moved):
        assert Version.objects.get(vector_id=point.pk).version == 2
        assert found_first(vector) == point.pk
        # The old vector's entries are stale: never returned for its old place.
        assert found_first(point.embedding, **EVERY_LIST) != point.pk
    assert "point_embedding: ok" in check("point_embedding")


@pytest.mark.django_db(transaction=True)
def test_a_raw_save_in_autocommit_is_one_transaction_with_its_index_write(monkeypatch):
    from vectorindex.index import writes

    Point.objects.bulk_create(Point(group=1, embedding=v) for v in clustered(300, seed=3))
    build("point_embedding")
    vector = clustered(1, seed=13)[0] + 40
    [obj] = serializers.deserialize("json", json.dumps([
        {"model": "testapp.point", "pk": 90_001, "fields": {"group": 1, "embedding": str(vector.tolist())}}
    ]))
    assert not connection.in_atomic_block

    def broken(*args, **kwargs):
        raise RuntimeError("the index write failed")

    monkeypatch.setattr(writes, "index_vectors", broken)
    with pytest.raises(RuntimeError, match="the index write failed"):
        obj.save()
    assert not Point.objects.filter(pk=90_001).exists()  # the row rolled back with it
    monkeypatch.undo()
    obj.save()
    assert found_first(vector) == 90_001
    assert Version.objects.get(vector_id=90_001).version == 1


def test_saves_with_signals_muted_still_index(built):
    """Test factories mute signals (factory_boy's mute_signals): the index does not rely on them."""
    vector = clustered(1, seed=14)[0] + 45
    saved = {}
    for signal in (pre_save, post_save, post_delete):
        saved[signal] = signal.receivers
        signal.receivers = []
        signal.sender_receivers_cache.clear()
    try:
        point = Point.objects.create(embedding=vector)
        [obj] = serializers.deserialize("json", serializers.serialize("json", [point]))
        obj.object.embedding = vector + 1
        obj.save()
    finally:
        for signal, receivers in saved.items():
            signal.receivers = receivers
            signal.sender_receivers_cache.clear()
    assert found_first(vector + 1) == point.pk
    assert Version.objects.get(vector_id=point.pk).version == 2


def test_update_or_create_and_get_or_create(built):
    vectors = clustered(3, seed=15) + 30
    created, _ = Point.objects.get_or_create(group=501, defaults={"embedding": vectors[0]})
    assert found_first(vectors[0]) == created.pk
    updated, was_created = Point.objects.update_or_create(group=501, defaults={"embedding": vectors[1]})
    assert not was_created and updated.pk == created.pk
    assert found_first(vectors[1]) == created.pk
    other, was_created = Point.objects.update_or_create(group=502, create_defaults={"embedding": vectors[2]})
    assert was_created and found_first(vectors[2]) == other.pk
    assert "point_embedding: ok" in check("point_embedding")


def test_the_base_class_save_base_indexes_once(built):
    """``models.Model.save_base(obj)``, as the deserializer calls it, reaches the index once."""
    vector = clustered(1, seed=16)[0] - 35
    point = Point(embedding=vector)
    models.Model.save_base(point)
    assert Version.objects.get(vector_id=point.pk).version == 1  # not indexed twice
    assert found_first(vector) == point.pk
    point.embedding = vector + 2
    models.Model.save_base(point, raw=True)
    assert Version.objects.get(vector_id=point.pk).version == 2
    assert found_first(vector + 2) == point.pk


# Saves within saves, copies, partial saves ----------------------------------------------


@pytest.mark.parametrize("fields", [None, ["group"], ["embedding"]], ids=["all", "other-field", "vector"])
def test_a_post_save_receiver_that_saves_the_instance_again(built, fields):
    """A receiver saving the instance anew runs inside the first save: the row
    is indexed once, and the first save ends without error."""

    def again(sender, instance, created, **kwargs):
        if created:
            instance.group = 9
            instance.save(update_fields=fields)

    post_save.connect(again, sender=Point)
    try:
        vector = clustered(1, seed=99)[0] + 40
        point = Point.objects.create(group=1, embedding=vector)
    finally:
        post_save.disconnect(again, sender=Point)
    assert Point.objects.get(pk=point.pk).group == (1 if fields == ["embedding"] else 9)
    assert list(Version.objects.filter(vector_id=point.pk).values_list("version", "deleted")) == [(1, False)]
    assert found_first(vector) == point.pk
    assert "point_embedding: ok" in check("point_embedding")


def test_a_copy_saved_with_its_pk_cleared_is_indexed(built):
    """Django's way to copy an instance: pk set to None, then save() inserts a new row."""
    point = Point.objects.order_by("pk").first()
    original = point.pk
    point.pk = None
    point._state.adding = False  # as loaded: Django's docs do not reset it either
    point.save()
    assert point.pk != original
    assert Version.objects.get(vector_id=point.pk).version == 1
    found = set(
        Point.objects.approximate(**EVERY_LIST).order_by(L2Distance("embedding", point.embedding)).values_list("pk", flat=True)[:2]
    )
    assert found == {original, point.pk}
    assert "point_embedding: ok" in check("point_embedding")


def test_a_vector_changed_but_left_out_of_update_fields_is_indexed_when_saved(built):
    point = Point.objects.order_by("pk").first()
    moved = clustered(1, seed=98)[0] - 45
    point.embedding = moved
    point.group = 5
    point.save(update_fields=["group"])  # the row keeps its old vector
    assert Version.objects.get(vector_id=point.pk).version == 1
    point.save()  # now it is written, and indexed
    assert Version.objects.get(vector_id=point.pk).version == 2
    assert found_first(moved) == point.pk
    assert "point_embedding: ok" in check("point_embedding")


def test_a_vector_changed_then_other_fields_refreshed_is_indexed_when_saved(built):
    point = Point.objects.order_by("pk").first()
    moved = clustered(1, seed=97)[0] + 45
    point.embedding = moved
    point.refresh_from_db(fields=["group"])  # reads the group only
    point.save()
    assert Version.objects.get(vector_id=point.pk).version == 2
    assert found_first(moved) == point.pk
    assert "point_embedding: ok" in check("point_embedding")
