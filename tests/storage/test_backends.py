"""storage/backends.py: a job's lock waits, and results streamed in chunks on any database."""

from types import SimpleNamespace

import pytest
from django.db import NotSupportedError, connection

from vectorindex.storage import dialect_for, lock_timeout, stream_rows


def lock_wait() -> int:
    with connection.cursor() as cursor:
        cursor.execute(dialect_for(connection).lock_wait_read)
        return int(cursor.fetchone()[0])


@pytest.mark.django_db
def test_a_lock_timeout_holds_inside_and_the_setting_before_is_restored_after():
    before = lock_wait()
    with lock_timeout(connection, 3):
        assert lock_wait() == 3 * dialect_for(connection).lock_wait_units
    assert lock_wait() == before


def test_a_lock_timeout_on_a_database_without_a_dialect_is_refused():
    with pytest.raises(NotSupportedError, match="A VectorIndex needs SQLite or MySQL/MariaDB; database 'other' is postgresql"):
        with lock_timeout(SimpleNamespace(vendor="postgresql", alias="other"), 3):
            pass


@pytest.mark.django_db
def test_rows_are_streamed_in_chunks():
    chunks = list(stream_rows(connection, "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3", [], 2))
    assert [[row[0] for row in chunk] for chunk in chunks] == [[1, 2], [3]]


def test_a_database_without_a_dialect_is_streamed_through_djangos_cursor():
    """An exact scan works on any database: one the index does not support streams through its own cursor."""
    rows = [(1,), (2,), (3,)]
    ran = []

    class Cursor:
        def execute(self, sql, params):
            ran.append((sql, params))

        def fetchmany(self, size):
            taken = rows[:size]
            del rows[:size]
            return taken

        def close(self):
            ran.append("closed")

    other = SimpleNamespace(vendor="postgresql", alias="other", cursor=Cursor)
    assert list(stream_rows(other, "SELECT id FROM t", [], 2)) == [[(1,), (2,)], [(3,)]]
    assert ran == [("SELECT id FROM t", []), "closed"]
