"""The index's state row (``IndexState``): its status, generation and WAL position, and the locks on it."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..models import IndexState
from .base import StorageBase


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

    def set_state(self, **values: Any) -> None:
        columns = ", ".join(f"{self.connection.ops.quote_name(k)} = %s" for k in values)
        self._execute(
            f"UPDATE {self.state_table} SET {columns} WHERE id = %s",
            [*values.values(), self.index_id],
        )
