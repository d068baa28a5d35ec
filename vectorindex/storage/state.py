"""The index's state row (``IndexState``): its status, generation and WAL position, and the locks on it."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..models import IndexState
from .base import StorageBase
from .dialects import dialect_for


class StateRow(NamedTuple):
    """An index's state row (``IndexState``) as a query or a job reads it."""

    status: str
    generation: int  # which build: snapshots and head rows of another generation are not this index's
    wal_lsn: int  # the last head change logged; a head index has replayed up to it

    @property
    def ready(self) -> bool:
        return self.status == IndexState.Status.READY


class StateRows(StorageBase):
    """Reads, locks and updates of the state row."""

    def read_state(self) -> StateRow:
        """(status, generation, wal_lsn): one primary-key read, no lock."""
        return self._select_state("")

    def lock_state(self, exclusive: bool) -> StateRow:
        """Lock the state row and read it (exclusive: head-changing jobs and builds)."""
        if exclusive:
            self._write_lock(self.state_table, "wal_lsn", "id = %s", [self.index_id])
        return self._select_state(self.dialect.update_lock() if exclusive else self.dialect.share_lock)

    def _select_state(self, lock: str) -> StateRow:
        rows = self._execute(
            f"SELECT status, generation, wal_lsn FROM {self.state_table} WHERE id = %s{lock}",
            [self.index_id],
        )
        return StateRow(*rows[0])

    def swept_deleted(self) -> int:
        """Deleted vectors' version rows the last sweep left."""
        return self._execute(f"SELECT swept_deleted FROM {self.state_table} WHERE id = %s", [self.index_id])[0][0]

    def set_calibration(self, calibration: dict, generation: int) -> bool:
        """Keep *calibration* in the state row, if the index is still of *generation* (a build replaces both)."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.state_table} SET calibration = %s WHERE id = %s AND generation = %s",
                [json.dumps(calibration), self.index_id, generation],
            )
            return cursor.rowcount == 1

    def set_state(self, **values: Any) -> None:
        columns = ", ".join(f"{self.connection.ops.quote_name(k)} = %s" for k in values)
        self._execute(
            f"UPDATE {self.state_table} SET {columns} WHERE id = %s",
            [*values.values(), self.index_id],
        )


class FoundState(NamedTuple):
    """A state row found by its index's name: its id, the row, what the index was last built for, and its calibration."""

    id: int
    row: StateRow
    built_dimensions: int | None
    built_distance: str
    calibration: Any  # as stored: JSON text (or decoded, by some drivers); {} before the first


def find_state(connection: Any, name: str, known_id: int | None = None) -> FoundState | None:
    """Index *name*'s state row: by *known_id* first (one primary-key read), else by name; None when it has none.

    A row under *known_id* with another name (the table was emptied and
    refilled since, as between tests) is not this index's: it is found again
    by name.
    """
    table = connection.ops.quote_name(IndexState._meta.db_table)
    row = None
    with connection.cursor() as cursor:
        if known_id is not None:
            cursor.execute(*state_by_id(connection, name, known_id))
            row = cursor.fetchone()
        if row is None:
            cursor.execute(f"SELECT {STATE_COLUMNS} FROM {table} WHERE name = %s", [name])
            row = cursor.fetchone()
    return found_state(row)


STATE_COLUMNS = "id, status, generation, wal_lsn, built_dimensions, built_distance, calibration"


def state_by_id(connection: Any, name: str, known_id: int) -> tuple[str, list]:
    """The statement (text, parameters) of :func:`find_state`'s primary-key read, to send with others."""
    table = connection.ops.quote_name(IndexState._meta.db_table)
    return f"SELECT {STATE_COLUMNS} FROM {table} WHERE id = %s AND name = %s", [known_id, name]


def found_state(row: Any) -> FoundState | None:
    """A row of ``STATE_COLUMNS`` as a :class:`FoundState` (None for no row)."""
    if row is None:
        return None
    return FoundState(row[0], StateRow(row[1], row[2], row[3]), row[4], row[5], row[6])


def stored_payload(connection: Any, state_id: int, *, share_lock: bool = False) -> Any:
    """The entry layout a build chose (the row's ``payload``, decoded), read as it is or under a shared lock."""
    table = connection.ops.quote_name(IndexState._meta.db_table)
    lock = dialect_for(connection).share_lock if share_lock else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT payload FROM {table} WHERE id = %s{lock}", [state_id])
        (stored,) = cursor.fetchone()
    return json.loads(stored) if isinstance(stored, str) else stored
