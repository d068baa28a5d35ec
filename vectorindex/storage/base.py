"""What every table's part of :class:`~vectorindex.storage.Storage` shares: the connection, its dialect, the statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..engine.postings import Payload
from ..models import Head, IndexState, Posting, Version, WalEntry
from .dialects import dialect_for

# Ids per IN (...) list: well under the parameters SQLite takes in one
# statement (32,766 since SQLite 3.32), and a statement of a few tens of
# kilobytes on MySQL/MariaDB. The first version's choice, not tuned since.
IN_BATCH = 5_000
# Posting lists one statement reads (or deletes): a list is tens of
# kilobytes. The first version's choice; a query probes fewer (128 by
# default), so it reads its lists in one statement a connection.
LISTS_PER_STATEMENT = 500


def integers(values: Iterable[int]) -> str:
    """Integers as the text of an SQL list, for an ``IN (...)`` of ids without a parameter each.

    A query's reads name tens to hundreds of ids: MySQLdb formats each
    parameter in Python, which took 100 of the 235 µs of a 150-id version
    lookup. ``int()`` lets nothing else into the statement.
    """
    return ", ".join([str(int(value)) for value in values])


def in_batches(items: Sequence, size: int = IN_BATCH) -> Iterable[Sequence]:
    """*items* in slices of at most *size*."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StorageBase:
    """One index's rows, through one database connection: construction and the statement helpers."""

    def __init__(self, connection: Any, index_id: int, dimensions: int, payload: Payload | None = None) -> None:
        self.dialect = dialect_for(connection)  # its locks are SQLite's or MySQL's, nobody else's
        self.connection = connection
        self.index_id = index_id
        self.dimensions = dimensions
        self.payload = payload or Payload(dimensions)
        # Several statements in one round trip (append_one).
        self.batches = self.dialect.multi_statements(connection)
        quote = connection.ops.quote_name
        self.state_table = quote(IndexState._meta.db_table)
        self.head_table = quote(Head._meta.db_table)
        self.posting_table = quote(Posting._meta.db_table)
        self.version_table = quote(Version._meta.db_table)
        self.wal_table = quote(WalEntry._meta.db_table)

    def _execute(self, sql: str, params: Sequence | None = ()) -> list[tuple]:
        """Rows *sql* returns; with ``params=None`` the text is sent as it is (no ``%`` formatting)."""
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def _executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(sql, rows)

    def _write_lock(self, table: str, column: str, where: str, params: Sequence) -> None:
        """Where a read cannot lock rows (SQLite), lock them by starting to write: a no-op UPDATE."""
        statement = self.dialect.write_lock(table, column, where)
        if statement is not None:
            self._execute(statement, params)

    @staticmethod
    def _marks(count: int) -> str:
        return ", ".join(["%s"] * count)

    def _binary(self, data: bytes) -> Any:
        return self.dialect.binary(self.connection, data)
