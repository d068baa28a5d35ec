"""Schema changes under a built index: dimensions or distance changed, the index removed and added again.

The column is a BLOB whatever the dimensions, so such a migration changes
nothing in the table: the index's state row says what it was built for, the
end of ``migrate`` resets an index whose declaration no longer matches, every
reader refuses one that was not reset, and rows still holding vectors of the
old size are named wherever they are read.
"""

import importlib
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from tests.indexing import ROOT, build, check, clustered, database_url
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.exceptions import CorruptVector, IndexOutdated
from vectorindex.index.runtime import reset_runtimes
from vectorindex.models import Head, IndexState, Posting, Snapshot, Version, WalEntry

NAME = "point_embedding"


@pytest.fixture
def points(db):
    vectors = clustered(300)
    created = Point.objects.bulk_create(Point(group=i % 5, embedding=v) for i, v in enumerate(vectors))
    build(NAME)
    return vectors, [p.pk for p in created]


def state() -> IndexState:
    return IndexState.objects.get(name=NAME)


def built_for(dimensions: int | None = None, distance: str | None = None) -> None:
    """Make the state row say its build was for these (as before the declaration changed)."""
    changes = {"built_dimensions": dimensions} if dimensions is not None else {}
    if distance is not None:
        changes["built_distance"] = distance
    IndexState.objects.filter(name=NAME).update(**changes)
    reset_runtimes()  # as a process started after the change


def contents(index_id: int) -> dict[str, int]:
    return {
        "heads": Head.objects.filter(index_id=index_id).count(),
        "postings": Posting.objects.filter(index_id=index_id).count(),
        "versions": Version.objects.filter(index_id=index_id).count(),
        "wal": WalEntry.objects.filter(index_id=index_id).count(),
        "snapshots": Snapshot.objects.filter(index_id=index_id).count(),
    }


def migrate(verbosity: int = 1) -> str:
    out = io.StringIO()
    call_command("migrate", verbosity=verbosity, stdout=out)
    return out.getvalue()


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("vectorindex", *args, stdout=out, stderr=out)
    return out.getvalue()


def nearest(query: np.ndarray, k: int = 5, **filters) -> list[int]:
    return list(Point.objects.filter(**filters).order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


def exact_nearest(query: np.ndarray, k: int = 5) -> list[int]:
    return list(Point.objects.exact().order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


def store(pks: list[int], blob: bytes) -> None:
    """Write *blob* into rows' vectors behind Django's back (as rows of an older schema hold)."""
    with connection.cursor() as cursor:
        for pk in pks:
            cursor.execute(f"UPDATE {Point._meta.db_table} SET embedding = %s WHERE id = %s", [blob, pk])


# The end of migrate ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migrate_resets_an_index_built_for_other_dimensions_and_says_what_to_run(points):
    vectors, pks = points
    index_id = state().pk
    assert contents(index_id)["heads"] > 0
    built_for(dimensions=8)

    out = migrate()

    assert (
        "Vector index point_embedding (testapp.Point.embedding): dimensions 8 → 16 since it was built; its contents "
        "were deleted and it is not built (queries take the exact path). Run `manage.py vectorindex build "
        "point_embedding` once its rows store 16-dimensional vectors (the build names any that do not)."
    ) in out
    row = state()
    assert (row.status, row.generation, row.wal_lsn, row.payload) == (IndexState.Status.EMPTY, 0, 0, {})
    assert contents(index_id) == {"heads": 0, "postings": 0, "versions": 0, "wal": 0, "snapshots": 0}
    assert "point_embedding" not in migrate(), "a reset index is not reset again"

    # Until it is built: no index work, the exact path answers, and status and check say why and what to run.
    new = Point.objects.create(embedding=vectors[0] + 0.01)
    assert contents(index_id)["versions"] == 0
    assert nearest(vectors[0], 2) == exact_nearest(vectors[0], 2) == [pks[0], new.pk]
    assert (
        "  its declaration changed since it was built (dimensions 8 → 16): it was reset; "
        "run `manage.py vectorindex build point_embedding`"
    ) in command("status", NAME).splitlines()
    assert json.loads(command("status", NAME, "--json"))["changed_since_build"] == ["dimensions 8 → 16"]
    with pytest.raises(CommandError) as caught:
        command("check", NAME)
    assert str(caught.value) == (
        "point_embedding: point_embedding is not built (its contents were deleted when its declaration changed: "
        "dimensions 8 → 16); run `manage.py vectorindex build point_embedding`."
    )

    build(NAME)
    assert (state().built_dimensions, state().built_distance) == (16, "l2")
    assert "ok" in check(NAME)
    assert "its declaration changed" not in command("status", NAME)
    assert nearest(vectors[0], 2) == [pks[0], new.pk]


@pytest.mark.django_db(transaction=True)
def test_migrate_resets_an_index_built_for_another_distance_and_is_quiet_at_verbosity_0(points):
    vectors, _pks = points
    index_id = state().pk
    built_for(distance="cosine")

    assert migrate(verbosity=0) == ""
    assert state().status == IndexState.Status.EMPTY
    assert contents(index_id)["heads"] == 0

    build(NAME)
    built_for(dimensions=8, distance="cosine")
    out = migrate()
    assert "point_embedding (testapp.Point.embedding): dimensions 8 → 16, distance cosine → l2 since it was built" in out


@pytest.mark.django_db(transaction=True)
def test_a_state_row_left_over_by_a_removed_index_is_reset_when_the_index_comes_back(points):
    """RemoveIndex cut short, then AddIndex with other dimensions: the old row is found by name, and what it
    holds was left behind (it is reset as such, whatever it was built for)."""
    index_id = state().pk
    IndexState.objects.filter(name=NAME).update(declared=False, built_dimensions=8)

    assert (
        "point_embedding (testapp.Point.embedding): what was stored under this name was left behind by an index "
        "that had left the database; it was deleted"
    ) in migrate()
    row = state()
    assert (row.pk, row.declared, row.status, row.built_dimensions) == (index_id, True, IndexState.Status.EMPTY, None)
    assert contents(index_id)["heads"] == 0


# Without migrate: every reader refuses, build replaces -------------------------------------


@pytest.mark.django_db
def test_an_index_built_for_another_declaration_is_refused_until_rebuilt(points):
    vectors, pks = points
    built_for(dimensions=8)
    refusal = (
        "point_embedding was built for another declaration (dimensions 8 → 16); rebuild it with "
        "`manage.py vectorindex build point_embedding` (`manage.py migrate` resets it to not built until then)."
    )

    with pytest.raises(IndexOutdated) as caught, transaction.atomic():
        Point.objects.create(embedding=vectors[1])
    assert str(caught.value) == refusal
    with pytest.raises(IndexOutdated, match="rebuild it with `manage.py vectorindex build point_embedding`"):
        nearest(vectors[1])
    for action in ("check", "snapshot", "recover"):
        with pytest.raises(CommandError) as caught:
            command(action, NAME)
        assert str(caught.value) == f"point_embedding: {refusal}"
    status = command("status", NAME).splitlines()
    assert status[0].endswith(": ready")
    assert status[1:] == [
        "  its declaration changed since it was built (dimensions 8 → 16): it is refused until rebuilt; "
        "run `manage.py vectorindex build point_embedding`",
    ]

    build(NAME)
    new = Point.objects.create(embedding=vectors[1] + 0.01)
    assert nearest(vectors[1], 2) == [pks[1], new.pk]
    assert "ok" in check(NAME)


# Rows of another size ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_build_refuses_rows_of_another_size_names_them_and_changes_nothing(points):
    vectors, pks = points
    before = state()
    held = contents(before.pk)
    wrong = pks[10:17]
    store(wrong, np.ones(8, "<f4").tobytes())

    with pytest.raises(CommandError) as caught:
        build(NAME)
    first = ", ".join(str(pk) for pk in wrong[:5])
    assert str(caught.value) == (
        f"point_embedding: testapp.Point.embedding: 7 rows store another size than 16 dimensions: rows {first} and 2 more; "
        f"row {wrong[0]} stores 8 dimensions (32 bytes); fix or clear those rows (save them with 16-dimensional "
        f"vectors, or delete them). The build changed nothing; run `manage.py vectorindex build point_embedding` "
        f"again once they are fixed."
    )
    after = state()
    assert (after.status, after.generation, after.built_at) == (IndexState.Status.READY, before.generation, before.built_at)
    assert contents(before.pk) == held

    # The rows load without their vectors, and a save with the right size fixes them.
    for point in Point.objects.defer("embedding").filter(pk__in=wrong):
        point.embedding = vectors[pks.index(point.pk)]
        point.save()
    build(NAME)
    assert "ok" in check(NAME)


@pytest.mark.django_db
def test_a_first_build_refuses_rows_of_another_size_and_leaves_the_index_not_built(db):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(20))
    odd = Point.objects.create(embedding=np.zeros(16))
    store([odd.pk], b"\x00" * 30)

    with pytest.raises(CommandError) as caught:
        build(NAME)
    named = f"row {odd.pk} stores 30 bytes, not a whole number of float32 values, expected 16; fix or clear that row"
    assert named in str(caught.value)
    assert state().status == IndexState.Status.EMPTY
    assert contents(state().pk)["heads"] == 0


@pytest.mark.django_db
def test_the_exact_path_names_rows_of_another_size(db, settings):
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZE": 7}  # the wrong row in a later chunk than the first
    vectors = clustered(40)
    pks = [p.pk for p in Point.objects.bulk_create(Point(group=i % 2, embedding=v) for i, v in enumerate(vectors))]
    store([pks[31]], np.ones(8, "<f4").tobytes())

    with pytest.raises(CorruptVector) as caught:
        exact_nearest(vectors[0])
    assert str(caught.value) == (
        f"testapp.Point.embedding: row {pks[31]} stores 8 dimensions (32 bytes), expected 16; "
        "fix or clear that row (save it with a 16-dimensional vector, or delete it)."
    )
    # The scan was closed before the rows were counted: the connection goes on.
    assert nearest(vectors[0], 1, group=0) == [pks[0]]


@pytest.mark.django_db
def test_the_re_rank_names_a_row_of_another_size(points):
    """int8 entries are re-ranked from the model's rows: a row changed behind the index's back is named."""
    vectors, pks = points
    store([pks[3]], np.ones(8, "<f4").tobytes())

    with pytest.raises(CorruptVector) as caught:
        nearest(vectors[3])
    assert str(caught.value) == (
        f"testapp.Point.embedding: row {pks[3]} stores 8 dimensions (32 bytes), expected 16; "
        "fix or clear that row (save it with a 16-dimensional vector, or delete it)."
    )


# The migration that added the record ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_finds_what_an_index_built_before_it_was_built_for(points):
    """Before it, migrate overwrote the state row's dimensions: the heads still tell the truth."""
    migration = importlib.import_module("vectorindex.migrations.0006_index_built_for")
    index_id = state().pk
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Head._meta.db_table} SET vector = %s", [np.ones(8, "<f4").tobytes()])
    IndexState.objects.filter(name=NAME).update(built_dimensions=None, built_distance="")

    migration.record_builds(django_apps, SimpleNamespace(connection=connection))

    assert (state().built_dimensions, state().built_distance) == (8, "l2")
    assert "point_embedding (testapp.Point.embedding): dimensions 8 → 16" in migrate()
    assert contents(index_id)["heads"] == 0


# As a user does it: models changed, makemigrations, migrate, in processes of their own ------------

SHOP_MODELS = '''
import os

from django.db import models

from vectorindex import VectorField, VectorIndex, VectorManager


class Item(models.Model):
    embedding = VectorField(dimensions=int(os.environ["SHOP_DIMENSIONS"]))

    objects = VectorManager()

    class Meta:
        indexes = (
            [VectorIndex(fields=["embedding"], name="shop_embedding", distance=os.environ["SHOP_DISTANCE"])]
            if os.environ["SHOP_INDEXED"] == "yes" else []
        )
'''

# Each step prints what it printed or the error it raised; the test reads them as one JSON line.
SHOP_STEPS = '''
import io
import json
import os
import sys

import django

django.setup()

import numpy as np
from django.core.management import call_command

from shop.models import Item
from vectorindex import L2Distance
from vectorindex.models import Head

DIMENSIONS = int(os.environ["SHOP_DIMENSIONS"])


def command(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


def vectors(count, seed):
    return np.random.default_rng(seed).normal(size=(count, DIMENSIONS)).astype("f4")


def nearest(query, **filters):
    return list(Item.objects.filter(**filters).order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:3])


STEPS = {
    "makemigrations": lambda: command("makemigrations", "shop"),
    "migrate": lambda: command("migrate"),
    "insert": lambda: [p.pk for p in Item.objects.bulk_create(Item(embedding=v) for v in vectors(40, 0))],
    "build": lambda: command("vectorindex", "build", "shop_embedding", "--seed", "1"),
    "status": lambda: json.loads(command("vectorindex", "status", "shop_embedding", "--json")),
    "check": lambda: command("vectorindex", "check", "shop_embedding"),
    "save": lambda: Item.objects.create(embedding=np.ones(DIMENSIONS)).pk,
    "nearest": lambda: nearest(np.ones(DIMENSIONS)),
    "nearest exactly": lambda: list(
        Item.objects.exact().order_by(L2Distance("embedding", np.ones(DIMENSIONS))).values_list("pk", flat=True)[:3]
    ),
    "nearest new": lambda: nearest(np.ones(DIMENSIONS), pk__gte=Item.objects.latest("pk").pk),
    "heads": lambda: Head.objects.filter(index__name="shop_embedding").count(),
    "fix": lambda: fix(),
}


def fix():
    """Every row saved again with a vector of the field's size: the first 40 random, the saved ones all ones."""
    for item in Item.objects.defer("embedding"):
        item.embedding = vectors(1, item.pk)[0] if item.pk <= 40 else np.ones(DIMENSIONS)
        item.save()


results = {}
for step in sys.argv[1:]:
    try:
        results[step] = STEPS[step]()
    except Exception as error:
        results[step] = f"{type(error).__name__}: {error}"
print(json.dumps(results))
'''


SHOP_SETTINGS = """
from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "shop"]  # noqa: F405
"""


def shop_env(tmp_path, dimensions: int, distance: str = "l2", indexed: bool = True) -> dict[str, str]:
    """The environment of a process of a project whose ``shop`` app has these declarations."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "shop_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "SHOP_DIMENSIONS": str(dimensions),
        "SHOP_DISTANCE": distance,
        "SHOP_INDEXED": "yes" if indexed else "no",
    }


def shop(tmp_path, dimensions: int, distance: str = "l2", indexed: bool = True):
    """Run steps in a new process of a project whose ``shop`` app now has these declarations."""
    (tmp_path / "shop" / "migrations").mkdir(parents=True, exist_ok=True)
    for path, text in [
        ("shop/__init__.py", ""),
        ("shop/migrations/__init__.py", ""),
        ("shop/models.py", SHOP_MODELS),
        ("shop_steps.py", SHOP_STEPS),
        ("shop_settings.py", SHOP_SETTINGS),
    ]:
        (tmp_path / path).write_text(text)
    env = shop_env(tmp_path, dimensions, distance, indexed)

    def run(*steps: str) -> dict:
        program = [sys.executable, str(tmp_path / "shop_steps.py"), *steps]
        done = subprocess.run(program, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


@pytest.mark.django_db(transaction=True)
def test_a_user_changes_dimensions_then_distance_then_removes_and_adds_the_index_again(tmp_path):
    run = shop(tmp_path, 8)
    try:
        first = run("makemigrations", "migrate", "insert", "build")
        pks = first["insert"]
        assert first["build"].startswith("shop_embedding: 40 vectors")

        # dimensions 8 → 16: an AlterField that changes nothing in the table.
        run = shop(tmp_path, 16)
        deployed = run("makemigrations", "migrate")
        assert "Alter field embedding on item" in deployed["makemigrations"]
        assert (
            "Vector index shop_embedding (shop.Item.embedding): dimensions 8 → 16 since it was built; its contents were "
            "deleted and it is not built (queries take the exact path). Run `manage.py vectorindex build shop_embedding` "
            "once its rows store 16-dimensional vectors (the build names any that do not)."
        ) in deployed["migrate"]
        wrong_rows = (
            f"shop.Item.embedding: 40 rows store another size than 16 dimensions: rows {', '.join(map(str, pks[:5]))} "
            f"and 35 more; row {pks[0]} stores 8 dimensions (32 bytes); fix or clear those rows (save them with "
            "16-dimensional vectors, or delete them)."
        )
        # migrate builds what it leaves not built, and says why it cannot.
        assert (
            f"shop_embedding is not built (queries take the exact path): {wrong_rows} The build changed nothing; "
            "run `manage.py vectorindex build shop_embedding` again once they are fixed."
        ) in deployed["migrate"]
        used = run("status", "check", "save", "nearest new", "nearest", "build", "heads")
        assert (used["status"]["status"], used["status"]["changed_since_build"]) == ("empty", ["dimensions 8 → 16"])
        assert used["check"] == (
            "CommandError: shop_embedding: shop_embedding is not built (its contents were deleted when its declaration "
            "changed: dimensions 8 → 16); run `manage.py vectorindex build shop_embedding`."
        )
        new = used["save"]
        assert used["nearest new"] == [new]
        assert used["nearest"] == f"CorruptVector: {wrong_rows}"
        assert used["build"] == (
            f"CommandError: shop_embedding: {wrong_rows} The build changed nothing; run "
            "`manage.py vectorindex build shop_embedding` again once they are fixed."
        )
        assert used["heads"] == 0

        fixed = run("fix", "build", "nearest", "nearest exactly", "check")
        assert fixed["build"].startswith("shop_embedding: 41 vectors")
        assert fixed["nearest"] == fixed["nearest exactly"]
        assert fixed["nearest"][0] == new
        assert fixed["check"] == "shop_embedding: ok\n"

        # distance l2 → cosine: the index removed and added again in one migration,
        # which drops what it stored (RemoveIndex): a new index, which migrate builds.
        run = shop(tmp_path, 16, "cosine")
        deployed = run("makemigrations", "migrate", "status", "save", "build", "check")
        assert "Building shop_embedding (shop.Item.embedding):\n  shop_embedding: 41 vectors" in deployed["migrate"]
        assert deployed["status"]["status"] == "ready" and "changed_since_build" not in deployed["status"]
        assert isinstance(deployed["save"], int)
        assert deployed["build"].startswith("shop_embedding: 42 vectors")
        assert deployed["check"] == "shop_embedding: ok\n"

        # The index removed in one migration, and added again over 24 dimensions in the next.
        run = shop(tmp_path, 16, "cosine", indexed=False)
        assert "Remove index shop_embedding" in run("makemigrations", "migrate")["makemigrations"]
        run = shop(tmp_path, 24, "cosine")
        deployed = run("makemigrations", "migrate", "status", "save", "nearest new", "build", "fix", "build")
        assert deployed["status"]["status"] == "empty"
        assert isinstance(deployed["save"], int)
        assert deployed["nearest new"] == [deployed["save"]]
        assert deployed["build"].startswith("shop_embedding: 43 vectors")
        assert "ok" in run("check")["check"]
    finally:  # the shop's table and migrations leave the test database
        program = [sys.executable, "-m", "django", "migrate", "shop", "zero"]
        subprocess.run(program, cwd=ROOT, env=shop_env(tmp_path, 8, indexed=False), capture_output=True, timeout=300)
