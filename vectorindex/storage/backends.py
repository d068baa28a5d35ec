"""What code outside :class:`~vectorindex.storage.Storage` does on a connection its backend's way.

A job's transaction and how long its lock waits last (through the
connection's dialect), and a long result streamed in chunks — the last on any
database, since an exact scan needs no index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections, transaction

from .dialects import DIALECTS, dialect_for


@contextmanager
def job_transaction(using: str) -> Iterator[None]:
    """The transaction of a build or a maintenance job: READ COMMITTED on MySQL/MariaDB, whatever the connection's default.

    A job waits for locks (the state row, a head's row) and must then read
    what the transactions it waited for committed. Under REPEATABLE READ its
    plain reads would show the tables as of its first read, before the
    wait: a split would copy a list as it stood before a merge appended to
    it, and retire the head with the merge's vectors behind.
    """
    connection = connections[using]
    dialect_for(connection).isolate_next_transaction(connection, "READ COMMITTED")
    with transaction.atomic(using=using):
        yield


@contextmanager
def lock_timeout(connection: Any, seconds: int) -> Iterator[None]:
    """Inside, a lock wait on *connection* gives up after *seconds*; the setting before is restored after."""
    dialect = dialect_for(connection)
    with connection.cursor() as cursor:
        cursor.execute(dialect.lock_wait_read)
        previous = int(cursor.fetchone()[0])
        cursor.execute(dialect.lock_wait_write.format(int(seconds * dialect.lock_wait_units)))
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(dialect.lock_wait_write.format(previous))
        except DatabaseError:
            # The connection broke: one whose settings are unknown is not reused.
            if not connection.in_atomic_block:
                connection.close()


def stream_rows(connection: Any, sql: str, params: Any, chunk_size: int) -> Iterator[list[tuple]]:
    """Run *sql* on *connection* and yield its rows in lists of *chunk_size*.

    The query runs in the connection's current transaction, so it sees that
    transaction's own uncommitted writes. Where the backend has a dialect,
    the rows come from the server as they are fetched (its
    ``streaming_cursor``); on any other database, through Django's cursor.
    """
    dialect = DIALECTS.get(connection.vendor)
    cursor = dialect.streaming_cursor(connection) if dialect is not None else connection.cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            yield rows
    finally:
        cursor.close()
