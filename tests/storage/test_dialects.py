"""storage/dialects: each backend's SQL choices behind one interface, and the refusal of a backend without one."""

from types import SimpleNamespace

import pytest
from django.db import NotSupportedError, connection
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import Point
from vectorindex.storage.dialects import DIALECTS, Dialect, dialect_for, supported_databases
from vectorindex.storage.dialects.mysql import MySQLDialect
from vectorindex.storage.dialects.sqlite import SQLiteDialect


class Recording:
    """A connection that records what it is asked to run (``in_atomic_block`` as given)."""

    def __init__(self, vendor: str, in_atomic_block: bool = False, **settings) -> None:
        self.vendor = vendor
        self.alias = "recorded"
        self.in_atomic_block = in_atomic_block
        self.settings_dict = settings
        self.ran: list[str] = []

    def cursor(self):
        recording = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, sql, params=None):
                recording.ran.append(sql)

        return Cursor()


def test_every_backend_a_vectorindex_works_on_has_a_dialect():
    assert list(DIALECTS) == ["sqlite", "mysql"]
    assert all(isinstance(dialect, Dialect) and vendor == dialect.vendor for vendor, dialect in DIALECTS.items())
    assert supported_databases() == "SQLite or MySQL/MariaDB"
    assert dialect_for(connection) is DIALECTS[connection.vendor]


@pytest.mark.parametrize("vendor", ["postgresql", "oracle"])
def test_any_other_database_is_refused_naming_those_supported(vendor):
    with pytest.raises(NotSupportedError) as refused:
        dialect_for(SimpleNamespace(vendor=vendor, alias="other"))
    assert str(refused.value) == (
        f"A VectorIndex needs SQLite or MySQL/MariaDB; database 'other' is {vendor}. "
        "A VectorField without an index works on any database."
    )


def test_the_supported_databases_are_named_from_the_registry(monkeypatch):
    monkeypatch.setitem(DIALECTS, "postgresql", SimpleNamespace(name="PostgreSQL"))
    assert supported_databases() == "SQLite, MySQL/MariaDB or PostgreSQL"
    monkeypatch.setattr("vectorindex.storage.dialects.DIALECTS", {"sqlite": SQLiteDialect()})
    assert supported_databases() == "SQLite"


def test_mysql_locks_rows_with_its_reads():
    mysql = MySQLDialect()
    assert mysql.row_locks
    assert mysql.update_lock() == " FOR UPDATE"
    assert mysql.update_lock(skip_locked=True) == " FOR UPDATE SKIP LOCKED"
    assert mysql.share_lock == " LOCK IN SHARE MODE"  # MariaDB 10.11 rejects FOR SHARE
    assert mysql.primary_key_hint == " FORCE INDEX (PRIMARY)"
    assert mysql.write_lock("t", "c", "id = %s") is None


def test_sqlite_locks_by_starting_to_write():
    sqlite = SQLiteDialect()
    assert not sqlite.row_locks
    assert sqlite.update_lock() == sqlite.update_lock(skip_locked=True) == ""
    assert sqlite.share_lock == sqlite.primary_key_hint == ""
    assert sqlite.write_lock("t", "c", "id = %s") == "UPDATE t SET c = c WHERE id = %s"


def test_each_dialect_upserts_a_version_its_way():
    assert MySQLDialect.version_upsert == "ON DUPLICATE KEY UPDATE version = version + 1, deleted = VALUES(deleted)"
    assert SQLiteDialect.version_upsert == (
        "ON CONFLICT (index_id, vector_id) DO UPDATE SET version = version + 1, deleted = excluded.deleted"
    )


def test_batches_of_statements_are_mysqls_unless_its_options_turn_them_off():
    mysql, sqlite = MySQLDialect(), SQLiteDialect()
    assert mysql.multi_statements(Recording("mysql"))
    assert mysql.multi_statements(Recording("mysql", OPTIONS={"charset": "utf8mb4"}))
    assert not mysql.multi_statements(Recording("mysql", OPTIONS={"multi_statements": False}))
    assert not sqlite.multi_statements(Recording("sqlite"))
    with pytest.raises(NotSupportedError, match="SQLite has no one-round-trip append"):
        sqlite.append_one(None, "index", 1, 0, 1, [1], 1, b"")


def test_reads_are_spread_and_the_newest_commit_read_elsewhere_on_mysql_only():
    assert MySQLDialect.parallel_reads and MySQLDialect.writers_read_a_snapshot
    assert not SQLiteDialect.parallel_reads and not SQLiteDialect.writers_read_a_snapshot


@pytest.mark.parametrize("level", ["READ COMMITTED", "REPEATABLE READ"])
def test_the_next_transactions_isolation_is_chosen_on_mysql_outside_a_transaction(level):
    outside, inside = Recording("mysql"), Recording("mysql", in_atomic_block=True)
    MySQLDialect().isolate_next_transaction(outside, level)
    MySQLDialect().isolate_next_transaction(inside, level)
    assert outside.ran == [f"SET TRANSACTION ISOLATION LEVEL {level}"]
    assert inside.ran == []
    sqlite = Recording("sqlite")
    SQLiteDialect().isolate_next_transaction(sqlite, level)
    assert sqlite.ran == []  # serializable, always


def test_lock_waits_are_a_session_setting_in_seconds_or_the_busy_timeout_in_milliseconds():
    assert (MySQLDialect.lock_wait_read, MySQLDialect.lock_wait_write, MySQLDialect.lock_wait_units) == (
        "SELECT @@SESSION.innodb_lock_wait_timeout", "SET SESSION innodb_lock_wait_timeout = {}", 1,
    )
    assert (SQLiteDialect.lock_wait_read, SQLiteDialect.lock_wait_write, SQLiteDialect.lock_wait_units) == (
        "PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", 1000,
    )


@pytest.mark.django_db
def test_the_locks_storage_takes_on_this_database(point_storage):
    """The statements of the locking reads, as the test database's dialect writes them."""
    storage = point_storage
    head = min(storage.alive_head_ids())
    vector_id = Point.objects.order_by("pk").first().pk
    with CaptureQueriesContext(connection) as captured:
        storage.lock_state(exclusive=True)
        storage.lock_state(exclusive=False)
        assert storage.lock_head(head, skip_locked=True) is True
        assert vector_id in storage.lock_versions([vector_id])
        storage.lock_all_heads()
    state, heads, versions = storage.state_table, storage.head_table, storage.version_table
    if connection.vendor == "mysql":
        expected = [
            f"SELECT status, generation, wal_lsn FROM {state} WHERE id = {storage.index_id} FOR UPDATE",
            f"SELECT status, generation, wal_lsn FROM {state} WHERE id = {storage.index_id} LOCK IN SHARE MODE",
            f"SELECT alive FROM {heads} FORCE INDEX (PRIMARY) WHERE id = {head} AND index_id = {storage.index_id} "
            "FOR UPDATE SKIP LOCKED",
            f"SELECT vector_id, version, deleted FROM {versions} FORCE INDEX (PRIMARY) "
            f"WHERE index_id = {storage.index_id} AND vector_id IN ({vector_id}) FOR UPDATE SKIP LOCKED",
            f"SELECT id, alive FROM {heads} FORCE INDEX (PRIMARY) WHERE index_id = {storage.index_id} AND alive = 1 "
            "FOR UPDATE",
        ]
    else:
        expected = [
            f"UPDATE {state} SET wal_lsn = wal_lsn WHERE id = {storage.index_id}",
            f"SELECT status, generation, wal_lsn FROM {state} WHERE id = {storage.index_id}",
            f"SELECT status, generation, wal_lsn FROM {state} WHERE id = {storage.index_id}",
            f"UPDATE {heads} SET alive = alive WHERE id = {head}",
            f"SELECT alive FROM {heads} WHERE id = {head} AND index_id = {storage.index_id}",
            f"UPDATE {versions} SET deleted = deleted WHERE index_id = {storage.index_id} AND vector_id IN ({vector_id})",
            f"SELECT vector_id, version, deleted FROM {versions} WHERE index_id = {storage.index_id} "
            f"AND vector_id IN ({vector_id})",
            # lock_all_heads: nothing; the write lock already keeps every appender out
        ]
    assert [query["sql"] for query in captured.captured_queries] == expected


def test_each_dialect_says_which_failures_a_job_runs_again_after():
    from django.db import OperationalError

    mysql, sqlite = MySQLDialect(), SQLiteDialect()
    deadlock = OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    lock_wait = OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")
    other = OperationalError(2006, "MySQL server has gone away")
    assert (mysql.deadlocked(deadlock), mysql.lock_wait_ran_out(deadlock)) == (True, False)
    assert (mysql.deadlocked(lock_wait), mysql.lock_wait_ran_out(lock_wait)) == (False, True)
    assert (mysql.deadlocked(other), mysql.lock_wait_ran_out(other)) == (False, False)
    locked = OperationalError("database is locked")
    assert (sqlite.deadlocked(locked), sqlite.lock_wait_ran_out(locked)) == (False, True)
    assert sqlite.lock_wait_ran_out(OperationalError("no such table: x")) is False
