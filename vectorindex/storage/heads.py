"""The heads table: one row per head (its vector, alive or retired), and the locks appenders and jobs take on it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.utils import timezone

from ..engine import codec
from ..models import Head
from .base import IN_BATCH, LISTS_PER_STATEMENT, StorageBase, in_batches

# Head rows per INSERT when heads are added (a build adds thousands): the
# first version's choice. Without a batch size, bulk_create sends them all in
# one statement on MySQL/MariaDB, whatever max_allowed_packet is.
HEADS_PER_INSERT = 1_000


class HeadRows(StorageBase):
    """Reads, writes and locks of the index's head rows."""

    def insert_heads(self, vectors: np.ndarray, lsn: int) -> np.ndarray:
        heads = Head.objects.using(self.connection.alias).bulk_create(
            [Head(index_id=self.index_id, vector=codec.to_bytes(v), created_lsn=lsn) for v in vectors],
            batch_size=HEADS_PER_INSERT,
        )
        return np.array([head.pk for head in heads], dtype=np.int64)

    def retire_head(self, head_id: int, lsn: int) -> None:
        self._execute(
            f"UPDATE {self.head_table} SET alive = %s, retired_lsn = %s, retired_at = %s "
            "WHERE id = %s AND index_id = %s",
            [False, lsn, timezone.now(), head_id, self.index_id],
        )

    def lock_head(self, head_id: int, skip_locked: bool = False) -> bool | None:
        """Lock one head's row exclusively (appenders wait); is it alive?

        With *skip_locked*, a head some transaction holds now is not waited
        for: None. (SQLite has no row locks to skip.)
        """
        dialect = self.dialect
        self._write_lock(self.head_table, "alive", "id = %s", [head_id])
        rows = self._execute(
            f"SELECT alive FROM {self.head_table}{dialect.primary_key_hint} WHERE id = %s AND index_id = %s"
            + dialect.update_lock(skip_locked),
            [head_id, self.index_id],
        )
        if skip_locked and not rows and dialect.row_locks:
            exists = self._execute(f"SELECT 1 FROM {self.head_table} WHERE id = %s", [head_id])
            return None if exists else False
        return bool(rows and rows[0][0])

    def lock_heads_shared(self, head_ids: Iterable[int]) -> dict[int, int]:
        """Share-lock these heads' rows; those still alive, with their lists' entries (docs/ARCHITECTURE.md §3).

        On InnoDB the lock must be on the clustered (primary key) record, the
        one a split or merge locks exclusively: a locking read answered from a
        covering secondary index (``(index_id, alive)`` holds both columns
        asked for) would lock only that index's records and never conflict.
        The entries come from a subquery, a plain read that locks no posting
        row (so that an append can tell whether it takes a list over its
        limit without another round trip).
        """
        ids = sorted({int(i) for i in head_ids})
        alive: dict[int, int] = {}
        for batch in in_batches(ids):
            rows = self._execute(self._lock_heads_sql(len(batch)), [self.index_id, *batch])
            alive.update(self._alive_sizes(rows))
        return alive

    def _lock_heads_sql(self, count: int, condition: str = "") -> str:
        """lock_heads_shared's statement for *count* head ids: (id, alive, entries) rows."""
        size = (
            f"(SELECT COALESCE(SUM(p.count), 0) FROM {self.posting_table} p "
            f"WHERE p.index_id = %s AND p.head_id = h.id)"
        )
        where = f"h.id IN ({self._marks(count)}){condition}"
        dialect = self.dialect
        return (
            f"SELECT h.id, h.alive, {size} FROM {self.head_table} h{dialect.primary_key_hint} "
            f"WHERE {where}{dialect.share_lock}"
        )

    @staticmethod
    def _alive_sizes(rows: Iterable[tuple]) -> Iterable[tuple[int, int]]:
        return ((head_id, int(entries)) for head_id, is_alive, entries in rows if is_alive)

    def lock_all_heads(self) -> None:
        """Exclusively lock every alive head (a rebuild waits for in-flight appends).

        Only where reads lock rows: on SQLite the rebuild's write lock
        already keeps every appender out.
        """
        dialect = self.dialect
        if dialect.row_locks:
            # Through the primary key, like every head lock (see lock_heads_shared).
            self._execute(
                f"SELECT id, alive FROM {self.head_table}{dialect.primary_key_hint} "
                f"WHERE index_id = %s AND alive = %s{dialect.update_lock()}",
                [self.index_id, True],
            )

    def expired_heads(self, before: Any) -> list[int]:
        """Retired heads whose grace period ended before *before*, and whose reassign has run."""
        rows = self._execute(
            f"SELECT id FROM {self.head_table} WHERE index_id = %s AND alive = %s AND retired_at < %s "
            "AND split_into IS NULL",
            [self.index_id, False, before],
        )
        return [row[0] for row in rows]

    def mark_split(self, head_id: int, new_head_ids: Sequence[int]) -> None:
        """Note on a retired head the heads its split made: its reassign is to do."""
        self._execute(
            f"UPDATE {self.head_table} SET split_into = %s WHERE id = %s AND index_id = %s",
            [json.dumps([int(h) for h in new_head_ids]), head_id, self.index_id],
        )

    def reassigned(self, head_id: int) -> None:
        """The reassign after *head_id*'s split has run."""
        self._execute(
            f"UPDATE {self.head_table} SET split_into = NULL WHERE id = %s AND index_id = %s", [head_id, self.index_id]
        )

    def pending_reassigns(self, before: Any = None) -> list[tuple[int, list[int]]]:
        """(retired head, the heads its split made) of every split whose reassign has not run.

        With *before*, only splits retired before then.
        """
        sql = f"SELECT id, split_into FROM {self.head_table} WHERE index_id = %s AND split_into IS NOT NULL"
        params: list[Any] = [self.index_id]
        if before is not None:
            sql += " AND retired_at < %s"
            params.append(before)
        return [(head_id, json.loads(ids) if isinstance(ids, str) else ids) for head_id, ids in self._execute(sql, params)]

    def delete_heads(self, head_ids: Sequence[int]) -> None:
        """A retired head and its posting rows, gone for good."""
        for batch in in_batches([int(h) for h in head_ids], LISTS_PER_STATEMENT):
            marks = self._marks(len(batch))
            self._execute(
                f"DELETE FROM {self.posting_table} WHERE index_id = %s AND head_id IN ({marks})",
                [self.index_id, *batch],
            )
            self._execute(
                f"DELETE FROM {self.head_table} WHERE index_id = %s AND alive = %s AND id IN ({marks})",
                [self.index_id, False, *batch],
            )

    def alive_head_ids(self) -> set[int]:
        rows = self._execute(
            f"SELECT id FROM {self.head_table} WHERE index_id = %s AND alive = %s", [self.index_id, True]
        )
        return {row[0] for row in rows}

    def alive_head_count(self) -> int:
        return self._execute(
            f"SELECT COUNT(*) FROM {self.head_table} WHERE index_id = %s AND alive = %s", [self.index_id, True]
        )[0][0]

    def head_vectors(self, head_ids: Sequence[int]) -> np.ndarray:
        """The vectors of these heads (alive or retired), in the order given."""
        found, vectors = self.head_rows(head_ids)
        if len(found) != len(head_ids):
            raise KeyError(f"heads {sorted(set(map(int, head_ids)) - set(found.tolist()))[:5]} are gone")
        return vectors

    def head_rows(self, head_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of these heads whose rows are still there, in the order given.

        A view can ask for up to ``HISTORY`` heads at once: more than SQLite
        takes as parameters of one statement (hence batches of ``IN_BATCH``).
        """
        ids = [int(h) for h in head_ids]
        rows: dict[int, Any] = {}
        for batch in in_batches(ids, IN_BATCH):
            rows.update(self._execute(
                f"SELECT id, vector FROM {self.head_table} WHERE index_id = %s AND id IN ({self._marks(len(batch))})",
                [self.index_id, *batch],
            ))
        found = [i for i in ids if i in rows]
        return np.array(found, dtype=np.int64), codec.stack_bytes([bytes(rows[i]) for i in found], self.dimensions)

    def head_vector(self, head_id: int) -> np.ndarray | None:
        rows = self._execute(
            f"SELECT vector FROM {self.head_table} WHERE id = %s AND index_id = %s", [head_id, self.index_id]
        )
        return codec.from_bytes(bytes(rows[0][0])) if rows else None

    def alive_heads(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._execute(
            f"SELECT id, vector FROM {self.head_table} WHERE index_id = %s AND alive = %s ORDER BY id",
            [self.index_id, True],
        )
        if not rows:
            return np.empty(0, np.int64), np.empty((0, self.dimensions), np.float32)
        ids, blobs = zip(*rows)
        return np.array(ids, dtype=np.int64), codec.stack_bytes([bytes(b) for b in blobs], self.dimensions)
