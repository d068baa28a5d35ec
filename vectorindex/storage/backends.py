"""What differs between database backends, kept in one place.

The index lives on SQLite and MySQL/MariaDB only (:func:`check_supported`,
system check ``vectorindex.E105``).

The exact path reads a whole table's keys and vectors in one pass. Django's
MySQL backend uses mysqlclient's default cursor, which buffers the entire result
in client memory before the first row is returned; an unbuffered server-side
cursor (``SSCursor``) keeps the pass within one chunk of memory. SQLite's cursor
already steps through the result lazily.

How long a statement waits for a lock another transaction holds is a session
setting on MySQL/MariaDB (``innodb_lock_wait_timeout``, in seconds) and a
connection setting on SQLite (its busy timeout, in milliseconds, which bounds
the wait for the one write lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, NotSupportedError, connections

# The index's locks and its posting-list sequence (storage.py) are written for
# these; a VectorField without an index works on any database (its distances
# are computed in numpy from a plain binary column).
SUPPORTED_VENDORS = ("sqlite", "mysql")
SUPPORTED = "SQLite or MySQL/MariaDB"


def vendor(alias: str) -> str:
    """The vendor of database *alias* (``"sqlite"``, ``"mysql"``, ``"postgresql"``, …), without connecting."""
    try:
        return connections[alias].vendor
    except (ImportError, ImproperlyConfigured):
        # The backend's driver is not installed here (psycopg, oracledb):
        # Django's own backends are named after their vendor.
        return connections.settings[alias]["ENGINE"].rsplit(".", 1)[-1]


def check_supported(connection: Any) -> None:
    """Refuse a database the index's storage is not written for, instead of treating it as SQLite."""
    if connection.vendor not in SUPPORTED_VENDORS:
        raise NotSupportedError(
            f"A VectorIndex needs {SUPPORTED}; database '{connection.alias}' is "
            f"{connection.vendor}. A VectorField without an index works on any database."
        )


def stream_rows(
    connection: Any, sql: str, params: Any, chunk_size: int
) -> Iterator[list[tuple]]:
    """Run *sql* on *connection* and yield its rows in lists of *chunk_size*.

    The query runs in the connection's current transaction, so it sees that
    transaction's own uncommitted writes.
    """
    cursor = _streaming_cursor(connection)
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            yield rows
    finally:
        cursor.close()


def _streaming_cursor(connection: Any) -> Any:
    if connection.vendor != "mysql":
        return connection.cursor()
    from MySQLdb.cursors import SSCursor

    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection.cursor(SSCursor)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


# vendor -> (statement reading the lock wait timeout, statement setting it,
# units in a second).
LOCK_TIMEOUTS = {
    "mysql": ("SELECT @@SESSION.innodb_lock_wait_timeout", "SET SESSION innodb_lock_wait_timeout = {}", 1),
    "sqlite": ("PRAGMA busy_timeout", "PRAGMA busy_timeout = {}", 1000),
}


@contextmanager
def lock_timeout(connection: Any, seconds: int) -> Iterator[None]:
    """Inside, a lock wait on *connection* gives up after *seconds*; the setting before is restored after."""
    read, write, units = LOCK_TIMEOUTS[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(read)
        previous = int(cursor.fetchone()[0])
        cursor.execute(write.format(int(seconds * units)))
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(write.format(previous))
        except DatabaseError:
            # The connection broke: one whose settings are unknown is not reused.
            if not connection.in_atomic_block:
                connection.close()
