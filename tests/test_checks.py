"""System checks."""

import contextlib

import pytest
from django.apps import apps
from django.core import checks
from django.db import models
from django.test.utils import isolate_apps

from tests.testapp.models import Plain, Point
from vectorindex import VectorField, VectorIndex


def ids(messages):
    return [message.id for message in messages]


class OwnQuerySets(models.Manager):
    """A manager that builds its querysets itself, not from super().get_queryset()."""

    def get_queryset(self):
        return models.QuerySet(self.model, using=self._db)


@pytest.mark.django_db(databases=["default", "other"])  # Django 6 asks every database during model checks
def test_every_manager_is_given_querysets_that_understand_distances():
    assert not [m for m in checks.run_checks(tags=[checks.Tags.models]) if m.id in ("vectorindex.W001", "vectorindex.E104")]


@isolate_apps("tests.testapp")
def test_a_default_manager_that_builds_its_own_querysets_warns():
    from vectorindex.checks import check_model_manager, check_model_vector_indexes

    class Own(models.Model):
        embedding = VectorField(dimensions=2)
        objects = OwnQuerySets()

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["embedding"], name="own_embedding")]

    [warning] = check_model_manager(Own)
    assert warning.id == "vectorindex.W001"
    assert warning.obj is Own
    assert "testapp.Own has a VectorField" in warning.msg
    assert "super().get_queryset()" in warning.hint
    error = next(m for m in check_model_vector_indexes(Own) if m.id == "vectorindex.E104")
    assert "needs a VectorQuerySet default manager" in error.msg


def test_admin_without_the_mixin_warns():
    from django.contrib import admin

    site_registry = dict(admin.site._registry)
    try:
        admin.site.register(Plain)
        messages = checks.run_checks(tags=[checks.Tags.admin])
        assert "vectorindex.W002" in ids(messages)
    finally:
        admin.site._registry = site_registry
    assert "vectorindex.W002" not in ids(checks.run_checks(tags=[checks.Tags.admin]))


@isolate_apps("tests.testapp")
def test_vector_field_cannot_be_unique():
    class Unique(models.Model):
        embedding = VectorField(dimensions=2, unique=True)

        class Meta:
            app_label = "testapp"

    assert "vectorindex.E001" in ids(Unique._meta.get_field("embedding").check())


def test_jobs_without_a_broker_or_a_scan_warn(settings):
    from vectorindex.checks import check_jobs

    settings.VECTORINDEX = {"JOBS": "celery"}
    settings.CELERY_BROKER_URL = None
    assert ids(check_jobs()) == ["vectorindex.W003"]
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_BEAT_SCHEDULE = {}
    assert ids(check_jobs()) == ["vectorindex.W004"]
    settings.CELERY_BEAT_SCHEDULE = {"scan": {"task": "vectorindex.scan", "schedule": 60}}
    assert check_jobs() == []
    settings.VECTORINDEX = {"JOBS": "inline"}
    settings.CELERY_BROKER_URL = None
    assert check_jobs() == []


# The index's databases ----------------------------------------------------------------

ELSEWHERE = {
    "postgresql": {"ENGINE": "django.db.backends.postgresql", "NAME": "vectorindex", "USER": "postgres", "HOST": "127.0.0.1", "PORT": "5432"},
    "oracle": {"ENGINE": "django.db.backends.oracle", "NAME": "127.0.0.1:1521/vectorindex", "USER": "system"},
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": "elsewhere.sqlite3"},
    "mysql": {"ENGINE": "django.db.backends.mysql", "NAME": "vectorindex", "USER": "root", "HOST": "127.0.0.1", "PORT": "3306"},
}


class PointElsewhere:
    """Reads, writes and migrates Point on database 'elsewhere', every other model on 'default'."""

    def db_for_read(self, model, **hints):
        return "elsewhere" if model is Point else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == ("elsewhere" if model_name == "point" else "default")


@pytest.fixture
def elsewhere(settings, monkeypatch):
    """A second database, 'elsewhere', of the vendor asked for; nothing connects to it.

    The alias goes into the DATABASES dict Django's connections read (they read
    the setting once, so a new DATABASES setting would not reach them).
    """
    from django.db import connections

    def add(vendor, routers=(PointElsewhere(),)):
        monkeypatch.setitem(connections.settings, "elsewhere", dict(ELSEWHERE[vendor]))
        settings.DATABASE_ROUTERS = list(routers)

    yield add
    with contextlib.suppress(AttributeError):  # no connection object when its driver is missing
        del connections["elsewhere"]


def index_database_errors():
    from vectorindex.checks import check_vector_indexes

    return [message for message in check_vector_indexes() if message.id == "vectorindex.E105"]


@pytest.mark.parametrize("vendor", ["postgresql", "oracle"])
def test_an_index_on_an_unsupported_database_is_refused(elsewhere, vendor):
    elsewhere(vendor)
    [error] = index_database_errors()
    assert error.obj is Point
    assert error.msg == (
        f"testapp.Point: VectorIndex 'point_embedding' is on database 'elsewhere', which is {vendor}: "
        "the index needs SQLite or MySQL/MariaDB."
    )
    assert error.hint.startswith("Keep testapp.Point on SQLite or MySQL/MariaDB (a database router decides")
    assert "a VectorField without an index works on any database" in error.hint


@pytest.fixture
def postgresql_dialect(monkeypatch):
    """A dialect registered for PostgreSQL, as a new backend's would be (only its vendor and name are read by the check)."""
    from vectorindex.storage import dialects
    from vectorindex.storage.dialects.mysql import MySQLDialect

    class Stand(MySQLDialect):
        vendor = "postgresql"
        name = "PostgreSQL"

    monkeypatch.setitem(dialects.DIALECTS, "postgresql", Stand())


def test_a_database_with_a_dialect_is_accepted(elsewhere, postgresql_dialect):
    """The supported databases come from the dialect registry."""
    elsewhere("postgresql")
    assert index_database_errors() == []


def test_the_databases_named_are_those_with_a_dialect(elsewhere, postgresql_dialect):
    elsewhere("oracle")
    [error] = index_database_errors()
    assert error.msg == (
        "testapp.Point: VectorIndex 'point_embedding' is on database 'elsewhere', which is oracle: "
        "the index needs SQLite, MySQL/MariaDB or PostgreSQL."
    )


class PointWrittenElsewhere:
    """Writes Point on 'elsewhere' but migrates nothing there (its table made by other means)."""

    def db_for_write(self, model, **hints):
        return "elsewhere" if model is Point else None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


def test_a_database_the_router_only_writes_to_counts_too(elsewhere):
    elsewhere("postgresql", routers=[PointWrittenElsewhere()])
    assert [error.obj for error in index_database_errors()] == [Point]


def index_database_warnings():
    from vectorindex.checks import check_vector_indexes

    return [message for message in check_vector_indexes() if message.id == "vectorindex.W005"]


class NoOpinion:
    """A router for other apps: it says nothing of Point."""

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return None


@pytest.mark.parametrize("routers", [(), (NoOpinion(),)])
def test_an_extra_database_no_router_sends_an_indexed_model_to_is_only_warned_of(elsewhere, routers):
    """Django would migrate every model on it, but only when asked to: an unrelated PostgreSQL database does not stop the project."""
    elsewhere("postgresql", routers=routers)
    assert index_database_errors() == []
    warnings = index_database_warnings()
    indexed = {model for model in apps.get_models() if any(isinstance(i, VectorIndex) for i in model._meta.indexes)}
    assert {warning.obj for warning in warnings} == indexed
    [point] = [warning for warning in warnings if warning.obj is Point]
    assert point.msg == (
        "testapp.Point: VectorIndex 'point_embedding': no database router keeps testapp.Point off database "
        "'elsewhere', which is postgresql; `migrate --database elsewhere` would create its table there, "
        "where the index cannot work (it needs SQLite or MySQL/MariaDB)."
    )
    # Warnings only: nothing that would stop `check`, `migrate` or `runserver`.
    # (Not through `call_command("check")`: under Django 6 its model checks
    # open every database, and this one's driver need not be installed.)
    from django.core import checks

    from vectorindex.checks import check_vector_indexes

    assert [m.id for m in check_vector_indexes() if m.level >= checks.ERROR] == []


def test_a_router_that_keeps_the_indexed_model_off_the_extra_database_silences_the_warning(elsewhere):
    elsewhere("postgresql", routers=[PointWrittenElsewhere()])  # Point migrated on 'default' only
    assert index_database_warnings() == []


@pytest.mark.parametrize("vendor", ["sqlite", "mysql"])
def test_an_index_on_sqlite_or_mysql_passes(elsewhere, vendor):
    elsewhere(vendor)
    assert index_database_errors() == []
    elsewhere(vendor, routers=())
    assert index_database_errors() == []


def test_the_test_database_passes():
    assert index_database_errors() == []


def test_storage_refuses_an_unsupported_database(monkeypatch):
    """If an index ever reaches another database, it says so instead of taking SQLite's locks."""
    from django.db import NotSupportedError, connection

    from vectorindex.storage import Storage

    Storage(connection, index_id=1, dimensions=16)
    monkeypatch.setattr(connection, "vendor", "postgresql")
    with pytest.raises(NotSupportedError) as refused:
        Storage(connection, index_id=1, dimensions=16)
    assert str(refused.value) == (
        "A VectorIndex needs SQLite or MySQL/MariaDB; database 'default' is postgresql. "
        "A VectorField without an index works on any database."
    )


# The buffer pool ---------------------------------------------------------------------


@pytest.fixture
def built_point(db):
    from tests.indexing import build, clustered

    Point.objects.bulk_create(Point(embedding=v) for v in clustered(300))
    build("point_embedding")


def buffer_pool_messages(databases=("default",)):
    from vectorindex.checks import check_buffer_pool

    return check_buffer_pool(databases=list(databases))


def test_posting_data_larger_than_the_buffer_pool_is_warned_of(built_point, monkeypatch):
    from tests.indexing import pretend_buffer_pool
    from vectorindex.storage.memory import MiB

    pretend_buffer_pool(monkeypatch, 128 * MiB, posting_table=286 * MiB)
    [warning] = buffer_pool_messages()
    assert (warning.id, warning.level) == ("vectorindex.W006", checks.WARNING)
    assert warning.msg == (
        "The posting lists of the vector indexes on database 'default' take 286 MiB, 2.2× the InnoDB buffer pool "
        "(128 MiB): queries will read lists from disk, several times slower."
    )
    assert warning.hint == (
        "Set innodb_buffer_pool_size to at least 384 MiB (see README, Deployment); "
        "`manage.py vectorindex status` shows each index's posting data."
    )
    pretend_buffer_pool(monkeypatch, 286 * MiB, posting_table=286 * MiB)
    assert buffer_pool_messages() == []


@pytest.mark.django_db(databases=["default", "other"])  # Django 6 asks every database during model checks
def test_the_buffer_pool_check_is_a_database_check(built_point, monkeypatch):
    """Django runs it for the databases `check --database` names (and `migrate` migrates), for none otherwise."""
    import io

    from django.core.management import call_command

    from tests.indexing import pretend_buffer_pool

    pretend_buffer_pool(monkeypatch, 1024, posting_table=4096)
    assert "vectorindex.W006" in ids(checks.run_checks(tags=[checks.Tags.database], databases=["default"]))
    assert "vectorindex.W006" not in ids(checks.run_checks())
    err = io.StringIO()
    call_command("check", "--database", "default", stderr=err, stdout=io.StringIO())
    assert "vectorindex.W006" in err.getvalue()


def test_the_test_databases_posting_data_fits(built_point):
    """On SQLite there is no pool to outgrow; on MariaDB, 300 vectors fit in any buffer pool."""
    assert buffer_pool_messages() == []


def test_a_database_without_a_buffer_pool_is_not_asked(built_point, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.indexing import pretend_buffer_pool
    from vectorindex.storage.dialects import DIALECTS

    pretend_buffer_pool(monkeypatch, 1024, posting_table=4096)
    monkeypatch.setattr(DIALECTS[connection.vendor], "buffer_pool", None)  # as SQLite's is
    with CaptureQueriesContext(connection) as queries:
        assert buffer_pool_messages() == []
    assert len(queries) == 0


def test_no_ready_index_no_warning(db, monkeypatch):
    from tests.indexing import pretend_buffer_pool

    pretend_buffer_pool(monkeypatch, 1024, posting_table=4096)
    assert buffer_pool_messages() == []


def test_tables_not_migrated_yet_say_nothing(built_point, monkeypatch):
    """The check runs before `migrate` creates the tables."""
    from tests.indexing import pretend_buffer_pool
    from vectorindex.models import IndexState

    pretend_buffer_pool(monkeypatch, 1024, posting_table=4096)
    monkeypatch.setattr(IndexState._meta, "db_table", "vectorindex_not_migrated_yet")
    assert buffer_pool_messages() == []


@pytest.fixture
def unreachable(monkeypatch):
    """Database 'unreachable': MariaDB on a port nothing listens on."""
    from django.db import connections

    configured = connections.configure_settings(
        {"default": {}, "unreachable": {"ENGINE": "django.db.backends.mysql", "NAME": "vectorindex", "HOST": "127.0.0.1", "PORT": "1"}}
    )
    monkeypatch.setitem(connections.settings, "unreachable", configured["unreachable"])
    yield "unreachable"
    with contextlib.suppress(AttributeError):
        del connections["unreachable"]


def test_a_database_that_cannot_be_reached_says_nothing(unreachable, django_db_blocker):
    from django.db import DatabaseError, connections

    with django_db_blocker.unblock():  # no test database: the check really tries to connect
        assert buffer_pool_messages([unreachable]) == []
        with pytest.raises(DatabaseError):
            connections[unreachable].ensure_connection()
