"""A removed or renamed VectorIndex: what migrations do with what it stored, and ``vectorindex drop``."""

import io
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection, migrations, models, transaction
from django.db.migrations.loader import MigrationLoader

from tests.indexing import build, check, clustered
from tests.testapp.models import Memo, Point, Shelf
from vectorindex import L2Distance, VectorIndex
from vectorindex.index import registry
from vectorindex.index.registry import get_declared, sync_states
from vectorindex.index.removal import leftovers
from vectorindex.index.runtime import reset_runtimes, runtime
from vectorindex.index.wal import change_heads
from vectorindex.models import Head, IndexState, Posting, Snapshot, SnapshotChunk, Version, WalEntry
from vectorindex.operations import RenameIndex, RenameModel, rename_vector_indexes

pytestmark = pytest.mark.django_db(transaction=True)  # schema editors and migrate run outside a test transaction


def stored(name):
    """Rows of each of vectorindex's tables that belong to index *name*."""
    state = IndexState.objects.filter(name=name).first()
    if state is None:
        return {}
    snapshots = list(Snapshot.objects.filter(index=state).values_list("pk", flat=True))
    return {
        "heads": Head.objects.filter(index=state).count(),
        "postings": Posting.objects.filter(index_id=state.pk).count(),
        "versions": Version.objects.filter(index_id=state.pk).count(),
        "wal": WalEntry.objects.filter(index_id=state.pk).count(),
        "snapshots": len(snapshots),
        "chunks": SnapshotChunk.objects.filter(snapshot_id__in=snapshots).count(),
    }


def built_points():
    """Point's index built, with a head added through the WAL, so that each of the tables holds some of it."""
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600))
    build("point_embedding")
    with transaction.atomic():
        storage, _state = runtime(get_declared("point_embedding"), "default").open()
        state = storage.lock_state(exclusive=True)
        change_heads(storage, state[2], add=clustered(1, seed=3))
    return stored("point_embedding")


def built_shelf():
    Shelf.objects.bulk_create(Shelf(embedding=v) for v in clustered(200, dimensions=4))
    build("shelf_vectors")
    return stored("shelf_vectors")


def built_note():
    Memo.objects.bulk_create(Memo(title=f"note {i}", vectors=v) for i, v in enumerate(clustered(200, dimensions=4, seed=5)))
    build("renamed_vectors")
    return stored("renamed_vectors")


def shelf_migrations():
    """testapp's migrations around Shelf: (the one before it, the one creating it, its RenameIndex), by name."""
    graph = MigrationLoader(connection).graph
    nodes = {key: migration for key, migration in graph.nodes.items() if key[0] == "testapp"}

    def holding(kind, **values):
        return next(
            key for key, migration in nodes.items()
            if any(isinstance(op, kind) and all(getattr(op, k) == v for k, v in values.items()) for op in migration.operations)
        )

    created = holding(migrations.CreateModel, name="Shelf")
    renamed = holding(migrations.RenameIndex, old_name="shelf_embedding", new_name="shelf_vectors")
    [before] = [parent.key for parent in graph.node_map[created].parents]
    return before[1], created[1], renamed[1]


def run(operations, backwards=False, collect=False):
    """Apply migration *operations* on testapp as ``migrate`` would; the SQL when *collect*."""
    state = MigrationLoader(connection).project_state()
    states = [state]
    for operation in operations:
        states.append(states[-1].clone())
        operation.state_forwards("testapp", states[-1])
    with connection.schema_editor(collect_sql=collect) as editor:
        steps = list(zip(operations, states, states[1:]))
        for operation, before, after in reversed(steps) if backwards else steps:
            if backwards:
                operation.database_backwards("testapp", editor, after, before)
            else:
                operation.database_forwards("testapp", editor, before, after)
    return editor.collected_sql if collect else None


def test_remove_index_deletes_what_the_index_stored_and_adding_it_back_builds_afresh():
    before = built_points()
    assert all(before.values()), before
    shelf = built_shelf()
    removal = [migrations.RemoveIndex("point", "point_embedding")]

    sql = run(removal, collect=True)  # what sqlmigrate prints
    deletes = [statement for statement in sql if statement.startswith("DELETE")]
    assert len(deletes) == 8 and all("'point_embedding'" in statement for statement in deletes)
    assert sql[-1].startswith("DELETE FROM") and "vectorindex_indexstate" in sql[-1]
    assert stored("point_embedding") == before  # collecting ran nothing

    run(removal)
    assert stored("point_embedding") == {}
    assert not Posting.objects.exclude(index_id__in=IndexState.objects.values("pk")).exists()
    assert stored("shelf_vectors") == shelf  # another index's contents are untouched

    run(removal, backwards=True)  # AddIndex again; migrate then registers it
    sync_states()
    reset_runtimes()
    out = io.StringIO()
    call_command("vectorindex", "status", "point_embedding", stdout=out)
    assert out.getvalue() == (
        "point_embedding (testapp.Point.embedding, l2, 16-d): not built: 600 rows with vectors; "
        "run `manage.py vectorindex build point_embedding`\n"
    )
    build("point_embedding")
    assert "point_embedding: ok" in check("point_embedding")
    vector = Point.objects.order_by("pk").first()
    assert Point.objects.order_by(L2Distance("embedding", vector.embedding)).first().pk == vector.pk


def test_a_change_of_options_keeps_the_built_index():
    """makemigrations writes a changed option as RemoveIndex + AddIndex of the same name."""
    before = built_points()
    generation = IndexState.objects.get(name="point_embedding").generation
    run([
        migrations.RemoveIndex("point", "point_embedding"),
        migrations.AddIndex("point", VectorIndex(fields=["embedding"], name="point_embedding", probes=64)),
    ])
    assert stored("point_embedding") == before
    assert IndexState.objects.get(name="point_embedding").generation == generation
    assert "point_embedding: ok" in check("point_embedding")


def test_a_change_of_options_keeps_the_built_index_when_the_migration_remakes_the_table():
    """testapp's 0009 as makemigrations wrote it: RemoveIndex, AlterField of Memo.title's max_length, AddIndex
    with probes=64. SQLite alters the column by remaking the table, and a remake runs every statement the
    migration deferred so far (and forgets them)."""
    before = built_note()
    generation = IndexState.objects.get(name="renamed_vectors").generation
    try:
        call_command("migrate", "testapp", "0008", verbosity=0)  # the same three operations, backwards
        state = IndexState.objects.get(name="renamed_vectors")
        assert (state.status, state.generation) == ("ready", generation)
        assert stored("renamed_vectors") == before
    finally:
        call_command("migrate", "testapp", verbosity=0)
    state = IndexState.objects.get(name="renamed_vectors")
    assert (state.status, state.generation, state.options["probes"]) == ("ready", generation, 64)
    assert stored("renamed_vectors") == before
    reset_runtimes()
    assert "renamed_vectors: ok" in check("renamed_vectors")


def test_what_sqlmigrate_shows_around_a_table_remake():
    out = io.StringIO()
    call_command("sqlmigrate", "testapp", "0009", stdout=out)
    assert "DELETE" not in out.getvalue()  # the index is kept

    remove = [
        migrations.RemoveIndex("memo", "renamed_vectors"),
        migrations.AlterField("memo", "title", models.CharField(max_length=60, blank=True)),
    ]
    sql = run(remove, collect=True)
    deletes = [number for number, statement in enumerate(sql) if statement.startswith("DELETE")]
    assert deletes == list(range(len(sql) - 8, len(sql)))  # at the end of the migration, after the table's
    assert all("'renamed_vectors'" in sql[number] for number in deletes)


def test_a_removal_deletes_at_the_end_of_a_migration_that_remakes_the_table():
    built_note()
    operations = [
        migrations.RemoveIndex("memo", "renamed_vectors"),
        migrations.AlterField("memo", "title", models.CharField(max_length=60, blank=True)),
    ]
    run(operations)
    try:
        assert stored("renamed_vectors") == {}
    finally:
        run(operations, backwards=True)
    assert Memo.objects.count() == 200


def test_renaming_the_indexed_field_keeps_the_built_index_both_ways():
    """testapp's 0008 as makemigrations wrote it: RemoveIndex, RenameField (embedding → vectors), AddIndex on vectors."""
    before = built_note()
    generation = IndexState.objects.get(name="renamed_vectors").generation
    try:
        call_command("migrate", "testapp", "0007", verbosity=0)
        state = IndexState.objects.get(name="renamed_vectors")
        assert (state.status, state.generation) == ("ready", generation)
        assert stored("renamed_vectors") == before
    finally:
        call_command("migrate", "testapp", verbosity=0)
    state = IndexState.objects.get(name="renamed_vectors")
    assert (state.status, state.generation, state.field_name) == ("ready", generation, "vectors")
    assert stored("renamed_vectors") == before
    reset_runtimes()
    assert "renamed_vectors: ok" in check("renamed_vectors")
    note = Memo.objects.order_by("pk")[9]
    assert Memo.objects.order_by(L2Distance("vectors", note.vectors)).first().pk == note.pk

    out = io.StringIO()
    call_command("sqlmigrate", "testapp", "0008", stdout=out)
    assert "DELETE" not in out.getvalue()
    assert "SET field_name = 'vectors' WHERE name = 'renamed_vectors'" in out.getvalue()


def test_the_migration_itself_follows_the_renamed_field():
    """The state row names the field as soon as the migration ran, before the end of migrate registers anything."""
    before = built_note()
    renaming = [
        migrations.RemoveIndex("memo", "renamed_vectors"),
        migrations.RenameField("memo", "vectors", "body"),
        migrations.AddIndex("memo", VectorIndex(fields=["body"], name="renamed_vectors", probes=64)),
    ]
    run(renaming)
    try:
        assert IndexState.objects.get(name="renamed_vectors").field_name == "body"
        assert stored("renamed_vectors") == before
    finally:
        run(renaming, backwards=True)
    assert IndexState.objects.get(name="renamed_vectors").field_name == "vectors"
    assert stored("renamed_vectors") == before


def test_a_change_of_distance_drops_the_built_index():
    built_points()
    run([
        migrations.RemoveIndex("point", "point_embedding"),
        migrations.AddIndex("point", VectorIndex(fields=["embedding"], name="point_embedding", distance="cosine")),
    ])
    assert stored("point_embedding") == {}  # the entries were routed by L2: a cosine index starts again


def test_rename_index_keeps_the_built_index_both_ways():
    """testapp's RenameIndex for shelf_embedding -> shelf_vectors is the one makemigrations wrote."""
    _before, created, _renamed = shelf_migrations()
    before = built_shelf()
    generation = IndexState.objects.get(name="shelf_vectors").generation
    try:
        call_command("migrate", "testapp", created, verbosity=0)  # RenameIndex backwards
        renamed = IndexState.objects.get(name="shelf_embedding")
        assert (renamed.status, renamed.generation) == ("ready", generation)
        assert stored("shelf_embedding") == before
        # migrate registered the name the models declare, as an index not built yet
        assert IndexState.objects.get(name="shelf_vectors").status == "empty"
    finally:
        call_command("migrate", "testapp", verbosity=0)
    assert not IndexState.objects.filter(name="shelf_embedding").exists()
    state = IndexState.objects.get(name="shelf_vectors")
    assert (state.status, state.generation, state.declared) == ("ready", generation, True)
    assert stored("shelf_vectors") == before
    reset_runtimes()
    assert "shelf_vectors: ok" in check("shelf_vectors")
    shelf = Shelf.objects.order_by("pk")[7]
    assert Shelf.objects.order_by(L2Distance("embedding", shelf.embedding)).first().pk == shelf.pk


def test_other_indexes_are_renamed_as_django_does():
    plain = models.Index(fields=["group"], name="point_group_plain")
    operations = [migrations.AddIndex("point", plain), RenameIndex("point", "point_group_renamed", old_name="point_group_plain")]
    run(operations)
    try:
        with connection.cursor() as cursor:
            names = set(connection.introspection.get_constraints(cursor, Point._meta.db_table))
        assert "point_group_renamed" in names and "point_group_plain" not in names
    finally:
        run(operations, backwards=True)


def test_migrate_runs_rename_index_as_vectorindex_rename_index():
    loader = MigrationLoader(connection)
    _before, created, renamed = shelf_migrations()
    migration = loader.graph.nodes["testapp", renamed]
    other = loader.graph.nodes["testapp", created]
    kept = list(other.operations)
    rename_vector_indexes(plan=[(other, False), (migration, False)])
    [operation] = migration.operations
    assert type(operation) is RenameIndex
    assert (operation.model_name, operation.old_name, operation.new_name) == ("shelf", "shelf_embedding", "shelf_vectors")
    assert other.operations == kept


def test_delete_model_leaves_what_its_index_stored_and_drop_deletes_it():
    before_shelf, created, _renamed = shelf_migrations()
    before = built_shelf()
    try:
        call_command("migrate", "testapp", created, verbosity=0)  # the index as it was first named
        call_command("migrate", "testapp", before_shelf, verbosity=0)  # DeleteModel: Django drops the table, nothing else
        assert stored("shelf_embedding") == before
        [left] = [item for item in leftovers() if item.name == "shelf_embedding"]
        assert (left.model, left.field, left.heads, left.versions) == ("testapp.Shelf", "embedding", before["heads"], 200)
        out = io.StringIO()
        call_command("vectorindex", "drop", "shelf_embedding", "--no-input", stdout=out)
        assert out.getvalue().startswith(f"shelf_embedding: dropped {before['heads']} heads, ")
        assert stored("shelf_embedding") == {}
        assert "shelf_embedding" not in {item.name for item in leftovers()}
    finally:
        call_command("migrate", "testapp", verbosity=0)
    assert IndexState.objects.get(name="shelf_vectors").status == "empty"


def test_an_index_declared_with_an_option_the_checks_refuse_is_still_declared(monkeypatch):
    """As code deployed with a bad option runs where nothing runs the system checks (a web server)."""
    before = built_shelf()
    refused = VectorIndex(fields=["embedding"], name="shelf_vectors", posting_limit=16, merge_below=8)
    monkeypatch.setattr(Shelf._meta, "indexes", [refused])
    monkeypatch.setattr(registry, "_declared_cache", None)
    [problem] = refused.problems()

    sync_states()  # the end of migrate
    assert IndexState.objects.get(name="shelf_vectors").declared
    assert "shelf_vectors" not in {item.name for item in leftovers()}
    with pytest.raises(CommandError) as refusal:
        call_command("vectorindex", "drop", "shelf_vectors", "--no-input")
    assert str(refusal.value).startswith("shelf_vectors is declared by testapp.Shelf: ")
    assert stored("shelf_vectors") == before

    # Used, it says what is wrong, and a write is refused rather than left out of the index.
    with pytest.raises(ImproperlyConfigured) as caught:
        Shelf.objects.create(embedding=[1, 2, 3, 4])
    assert str(caught.value) == f"testapp.Shelf: {problem}"
    assert Shelf.objects.count() == 200
    with pytest.raises(CommandError) as caught:
        call_command("vectorindex", "build", "shelf_vectors")
    assert str(caught.value) == f"shelf_vectors: ImproperlyConfigured: testapp.Shelf: {problem}"
    assert stored("shelf_vectors") == before


# An index of a name used before --------------------------------------------------------------


def emptied():
    return {"heads": 0, "postings": 0, "versions": 0, "wal": 0, "snapshots": 0, "chunks": 0}


def reset_message(name, declared, why):
    return (
        f"Vector index {name} ({declared}): what was stored under this name {why}; it was deleted and the "
        f"index is not built (queries take the exact path). Run `manage.py vectorindex build {name}`."
    )


def test_an_index_created_again_does_not_take_over_what_it_left_behind():
    """Built, then `migrate testapp zero` (Django drops the tables; what the indexes stored stays) and
    `migrate testapp`. On the way back Memo's migrations take removed indexes over (a renamed field,
    a change of options): what they take over is still what the index left behind."""
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")
    built_note()
    try:
        call_command("migrate", "testapp", "zero", verbosity=0)
        for name in ("point_embedding", "renamed_vectors"):
            left = IndexState.objects.get(name=name)
            assert (left.status, left.declared) == ("ready", False)
    finally:
        out = io.StringIO()
        call_command("migrate", "testapp", stdout=out)
    left_behind = "was left behind by an index that had left the database"
    assert reset_message("point_embedding", "testapp.Point.embedding", left_behind) in out.getvalue()
    assert reset_message("renamed_vectors", "testapp.Memo.vectors", left_behind) in out.getvalue()
    for name in ("point_embedding", "renamed_vectors"):
        state = IndexState.objects.get(name=name)
        assert (state.status, state.declared, state.built_dimensions) == ("empty", True, None)
        assert stored(name) == emptied()
    reset_runtimes()
    status = io.StringIO()
    call_command("vectorindex", "status", "point_embedding", "--json", stdout=status)
    assert json.loads(status.getvalue())["status"] == "empty"

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(50, seed=4))
    build("point_embedding")
    assert stored("point_embedding")["versions"] == 50
    assert "point_embedding: ok" in check("point_embedding")  # no version of a row that is gone


def test_an_index_does_not_take_over_what_another_model_left_under_its_name():
    built_shelf()
    # As a model of an app uninstalled since left it under the name Shelf's index has.
    IndexState.objects.filter(name="shelf_vectors").update(model_label="shop.Box", field_name="vector")
    out = io.StringIO()
    call_command("migrate", stdout=out)
    message = reset_message("shelf_vectors", "testapp.Shelf.embedding", "belonged to an index on shop.Box.vector")
    assert message in out.getvalue()
    state = IndexState.objects.get(name="shelf_vectors")
    assert (state.status, state.model_label, state.field_name, state.declared) == ("empty", "testapp.Shelf", "embedding", True)
    assert stored("shelf_vectors") == emptied()
    assert "shelf_vectors" not in migrate_output(), "a reset index is not reset again"


def migrate_output(*args):
    out = io.StringIO()
    call_command("migrate", *args, stdout=out)
    return out.getvalue()


def test_renaming_the_model_keeps_the_built_index_both_ways():
    """testapp's 0010 as makemigrations wrote it: RenameModel (Note → Memo), and nothing about the index."""
    before = built_note()
    generation = IndexState.objects.get(name="renamed_vectors").generation
    try:
        assert "renamed_vectors" not in migrate_output("testapp", "0009")
        state = IndexState.objects.get(name="renamed_vectors")
        assert (state.status, state.generation, state.model_label, state.declared) == ("ready", generation, "testapp.Note", True)
    finally:
        assert "renamed_vectors" not in migrate_output("testapp")
    state = IndexState.objects.get(name="renamed_vectors")
    assert (state.status, state.generation, state.model_label, state.declared) == ("ready", generation, "testapp.Memo", True)
    assert stored("renamed_vectors") == before
    reset_runtimes()
    assert "renamed_vectors: ok" in check("renamed_vectors")


def test_migrate_runs_rename_model_as_vectorindex_rename_model():
    migration = MigrationLoader(connection).graph.nodes["testapp", "0010_rename_note_memo"]
    rename_vector_indexes(plan=[(migration, True)])
    [operation] = migration.operations
    assert type(operation) is RenameModel
    assert (operation.old_name, operation.new_name) == ("Note", "Memo")
