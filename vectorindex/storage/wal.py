"""The head WAL table: the ordered log of head-index changes (add a head, retire one), an LSN per entry.

It is written in the same transaction as the posting changes an entry
belongs to, and truncated once a snapshot covers it.
"""

from __future__ import annotations

import numpy as np

from ..engine import codec
from .base import StorageBase


class WalRows(StorageBase):
    """Appends, reads and truncation of the index's head WAL."""

    def append_wal(self, lsn: int, op: int, head_id: int, vector: np.ndarray | None) -> None:
        self._execute(
            f"INSERT INTO {self.wal_table} (index_id, lsn, op, head_id, vector) VALUES (%s, %s, %s, %s, %s)",
            [self.index_id, lsn, op, head_id, None if vector is None else self._binary(codec.to_bytes(vector))],
        )

    def read_wal(self, after_lsn: int) -> list[tuple[int, int, int, bytes | None]]:
        return self._execute(
            f"SELECT lsn, op, head_id, vector FROM {self.wal_table} WHERE index_id = %s AND lsn > %s ORDER BY lsn",
            [self.index_id, after_lsn],
        )

    def wal_length(self) -> int:
        return self._execute(f"SELECT COUNT(*) FROM {self.wal_table} WHERE index_id = %s", [self.index_id])[0][0]

    def truncate_wal(self, up_to_lsn: int) -> None:
        self._execute(f"DELETE FROM {self.wal_table} WHERE index_id = %s AND lsn <= %s", [self.index_id, up_to_lsn])
